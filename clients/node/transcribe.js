#!/usr/bin/env node
// Node client of the subtitler gateway: uploads a media file, follows the
// job with a progress line, and writes its subtitles.
//
//   node transcribe.js FILE [-o OUT.srt] [--format srt|vtt|json|text|ass]
//                           [--language CODE] [--gateway HOST:PORT] [--token TOKEN]
//
// The protos are loaded at run time from ../../protos (SUBTITLER_PROTOS to
// point elsewhere) with @grpc/proto-loader, grpc-js's own way: nothing is
// generated. The gateway is SUBTITLER_GATEWAY or localhost:50051.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PIECE_BYTES = 1024 * 1024;
const FORMATS = {
  srt: "RESULT_FORMAT_SRT", vtt: "RESULT_FORMAT_VTT", json: "RESULT_FORMAT_JSON",
  text: "RESULT_FORMAT_TEXT", ass: "RESULT_FORMAT_ASS",
};
const STAGES = {
  STAGE_DECODE: "decode", STAGE_DETECT_SPEECH: "speech", STAGE_TRANSCRIBE: "transcribe", STAGE_ALIGN: "align",
};

function usage(message) {
  if (message) process.stderr.write(`subtitler-node: ${message}\n`);
  process.stderr.write(
    "usage: transcribe.js FILE [-o OUT] [--format srt|vtt|json|text|ass] [--language CODE]\n" +
      "                     [--gateway HOST:PORT (SUBTITLER_GATEWAY, localhost:50051)] [--token TOKEN]\n",
  );
  process.exit(2);
}

function parseArguments(argv) {
  const options = {
    gateway: process.env.SUBTITLER_GATEWAY || "localhost:50051",
    token: process.env.SUBTITLER_TOKEN || "",
    format: "srt",
    language: "",
    output: "",
    file: "",
  };
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${argument} needs a value`));
    if (argument === "-o" || argument === "--output") options.output = value();
    else if (argument === "--format") options.format = value();
    else if (argument === "--language") options.language = value();
    else if (argument === "--gateway") options.gateway = value();
    else if (argument === "--token") options.token = value();
    else if (argument === "-h" || argument === "--help") usage();
    else if (argument.startsWith("-")) usage(`unknown option ${argument}`);
    else if (!options.file) options.file = argument;
    else usage(`one file at a time (got ${argument})`);
  }
  if (!options.file) usage("name the file to transcribe");
  if (!FORMATS[options.format]) usage(`--format ${options.format}: use one of ${Object.keys(FORMATS).join(", ")}`);
  options.output ||= `${options.file.replace(/\.[^./]*$/, "")}.${options.format}`;
  return options;
}

function gatewayService() {
  const root = process.env.SUBTITLER_PROTOS || path.join(__dirname, "..", "..", "protos");
  const definition = protoLoader.loadSync(path.join(root, "subtitler/gateway/v1/gateway.proto"), {
    includeDirs: [root],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).subtitler.gateway.v1.GatewayService;
}

function fail(message, code = 1) {
  process.stderr.write(`\nsubtitler-node: ${message}\n`);
  process.exit(code);
}

function describe(error) {
  return `${grpc.status[error.code] || error.code}: ${error.details || error.message}`;
}

function upload(client, metadata, options) {
  return new Promise((resolve, reject) => {
    const call = client.UploadMedia(metadata, (error, job) => (error ? reject(error) : resolve(job)));
    const size = fs.statSync(options.file).size;
    const config = options.language ? { transcription: { language_code: options.language } } : {};
    call.write({ metadata: { file_name: path.basename(options.file), size_bytes: size, config } });
    const stream = fs.createReadStream(options.file, { highWaterMark: PIECE_BYTES });
    stream.on("data", (piece) => {
      if (!call.write({ chunk: piece })) {
        stream.pause();
        call.once("drain", () => stream.resume());
      }
    });
    stream.on("error", (error) => { call.cancel(); reject(error); });
    stream.on("end", () => call.end());
  });
}

function follow(client, metadata, jobId) {
  return new Promise((resolve, reject) => {
    let last = null;
    const watch = client.WatchJob({ job_id: jobId }, metadata);
    watch.on("data", (event) => {
      last = event;
      let stage = "";
      if (event.detail === "stage_progress") stage = STAGES[event.stage_progress.stage] || "";
      else if (event.detail === "queue_position") stage = `queued #${event.queue_position}`;
      const percent = Math.round((event.progress || 0) * 100);
      const line = `${event.state.replace("JOB_STATE_", "").toLowerCase()} ${stage} ${percent}%`;
      if (process.stderr.isTTY) process.stderr.write(`\r${line.padEnd(40).slice(0, process.stderr.columns - 1)}`);
      else if (stage) process.stderr.write(`${line}\n`);
    });
    watch.on("error", reject);
    watch.on("end", () => resolve(last));
  });
}

async function main() {
  const options = parseArguments(process.argv.slice(2));
  if (!fs.existsSync(options.file)) fail(`no such file: ${options.file}`, 2);
  const outputDirectory = path.dirname(path.resolve(options.output));
  if (!fs.existsSync(outputDirectory)) fail(`the output's directory does not exist: ${outputDirectory}`, 2);
  const Gateway = gatewayService();
  const client = new Gateway(options.gateway, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (options.token) metadata.set("authorization", `Bearer ${options.token}`);
  try {
    const job = await upload(client, metadata, options);
    process.stderr.write(`job ${job.job_id}\n`);
    await follow(client, metadata, job.job_id);
    const finished = await new Promise((resolve, reject) =>
      client.GetJob({ job_id: job.job_id }, metadata, (error, reply) => (error ? reject(error) : resolve(reply))),
    );
    if (finished.state !== "JOB_STATE_SUCCEEDED") {
      fail(`the job ${finished.state.replace("JOB_STATE_", "").toLowerCase()}: ${finished.error ? finished.error.message : ""}`);
    }
    const result = await new Promise((resolve, reject) =>
      client.GetResult({ job_id: job.job_id, format: FORMATS[options.format] }, metadata, (error, reply) =>
        error ? reject(error) : resolve(reply),
      ),
    );
    fs.writeFileSync(options.output, result.content);
    process.stderr.write(`\nwrote ${options.output}\n`);
  } catch (error) {
    fail(error.code !== undefined ? describe(error) : String(error.message || error));
  } finally {
    client.close();
  }
}

main();
