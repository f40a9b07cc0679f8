// Command subtitler-go is a Go client of the subtitler gateway: it uploads a
// media file, follows the job with a progress line, and writes its subtitles.
//
//	subtitler-go [-gateway HOST:PORT] [-o OUT.srt] [-format srt|vtt|json|text|ass] [-language CODE] [-token T] FILE
//
// Its stubs are generated from protos/ by `make clients` (protoc with
// protoc-gen-go and protoc-gen-go-grpc); it builds against Debian's Go gRPC
// packages in GOPATH mode, so it needs no module proxy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	asrv1 "subtitler/clients/go/gen/subtitler/asr/v1"
	gatewayv1 "subtitler/clients/go/gen/subtitler/gateway/v1"
)

const pieceBytes = 1 << 20

var formats = map[string]gatewayv1.ResultFormat{
	"srt":  gatewayv1.ResultFormat_RESULT_FORMAT_SRT,
	"vtt":  gatewayv1.ResultFormat_RESULT_FORMAT_VTT,
	"json": gatewayv1.ResultFormat_RESULT_FORMAT_JSON,
	"text": gatewayv1.ResultFormat_RESULT_FORMAT_TEXT,
	"ass":  gatewayv1.ResultFormat_RESULT_FORMAT_ASS,
}

var stages = map[gatewayv1.Stage]string{
	gatewayv1.Stage_STAGE_DECODE:        "decode",
	gatewayv1.Stage_STAGE_DETECT_SPEECH: "speech",
	gatewayv1.Stage_STAGE_TRANSCRIBE:    "transcribe",
	gatewayv1.Stage_STAGE_ALIGN:         "align",
}

func main() {
	defaultGateway := os.Getenv("SUBTITLER_GATEWAY")
	if defaultGateway == "" {
		defaultGateway = "localhost:50051"
	}
	gateway := flag.String("gateway", defaultGateway, "the gateway (SUBTITLER_GATEWAY)")
	output := flag.String("o", "", "where to write the subtitles (default: FILE with the format's extension)")
	format := flag.String("format", "srt", "srt, vtt, json, text or ass")
	language := flag.String("language", "", "the spoken language's code (empty: detected)")
	token := flag.String("token", os.Getenv("SUBTITLER_TOKEN"), "bearer token (SUBTITLER_TOKEN)")
	flag.Parse()
	if flag.NArg() != 1 {
		usage("name one file to transcribe")
	}
	file := flag.Arg(0)
	resultFormat, ok := formats[*format]
	if !ok {
		usage(fmt.Sprintf("-format %s: use srt, vtt, json, text or ass", *format))
	}
	if *output == "" {
		*output = strings.TrimSuffix(file, filepath.Ext(file)) + "." + *format
	}
	if _, err := os.Stat(filepath.Dir(*output)); err != nil {
		fail(2, "the output's directory does not exist: %s", filepath.Dir(*output))
	}
	media, err := os.Open(file)
	if err != nil {
		fail(2, "cannot read %s: %v", file, err)
	}
	defer media.Close()

	connection, err := grpc.Dial(*gateway, grpc.WithInsecure()) // Debian's grpc-go predates credentials/insecure
	if err != nil {
		fail(1, "cannot reach the gateway at %s: %v", *gateway, err)
	}
	defer connection.Close()
	client := gatewayv1.NewGatewayServiceClient(connection)
	ctx := context.Background()
	if *token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+*token)
	}

	job, err := upload(ctx, client, media, file, *language)
	if err != nil {
		fail(1, "upload failed: %s", describe(err))
	}
	fmt.Fprintf(os.Stderr, "job %s\n", job.JobId)
	if err := follow(ctx, client, job.JobId); err != nil {
		fail(1, "watching the job failed: %s", describe(err))
	}
	finished, err := client.GetJob(ctx, &gatewayv1.GetJobRequest{JobId: job.JobId})
	if err != nil {
		fail(1, "%s", describe(err))
	}
	if finished.State != gatewayv1.JobState_JOB_STATE_SUCCEEDED {
		fail(1, "the job %s: %s", strings.ToLower(strings.TrimPrefix(finished.State.String(), "JOB_STATE_")),
			finished.GetError().GetMessage())
	}
	result, err := client.GetResult(ctx, &gatewayv1.GetResultRequest{JobId: job.JobId, Format: resultFormat})
	if err != nil {
		fail(1, "%s", describe(err))
	}
	if err := os.WriteFile(*output, []byte(result.Content), 0o644); err != nil {
		fail(1, "cannot write %s: %v", *output, err)
	}
	fmt.Fprintf(os.Stderr, "\nwrote %s\n", *output)
}

func upload(ctx context.Context, client gatewayv1.GatewayServiceClient, media *os.File, file, language string) (*gatewayv1.Job, error) {
	info, err := media.Stat()
	if err != nil {
		return nil, err
	}
	stream, err := client.UploadMedia(ctx)
	if err != nil {
		return nil, err
	}
	config := &gatewayv1.JobConfig{}
	if language != "" {
		config.Transcription = &asrv1.TranscriptionOptions{LanguageCode: language}
	}
	first := &gatewayv1.UploadMediaRequest{Payload: &gatewayv1.UploadMediaRequest_Metadata{Metadata: &gatewayv1.UploadMetadata{
		FileName: filepath.Base(file), SizeBytes: info.Size(), Config: config,
	}}}
	if err := stream.Send(first); err != nil {
		return nil, err
	}
	buffer := make([]byte, pieceBytes)
	for {
		read, err := media.Read(buffer)
		if read > 0 {
			piece := &gatewayv1.UploadMediaRequest{Payload: &gatewayv1.UploadMediaRequest_Chunk{Chunk: append([]byte(nil), buffer[:read]...)}}
			if err := stream.Send(piece); err != nil {
				// The server ended the call: its status says why.
				_, closeErr := stream.CloseAndRecv()
				return nil, closeErr
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

func follow(ctx context.Context, client gatewayv1.GatewayServiceClient, jobID string) error {
	watch, err := client.WatchJob(ctx, &gatewayv1.WatchJobRequest{JobId: jobID})
	if err != nil {
		return err
	}
	terminal := isTerminal(os.Stderr)
	for {
		event, err := watch.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		stage := ""
		switch detail := event.Detail.(type) {
		case *gatewayv1.JobEvent_StageProgress:
			stage = stages[detail.StageProgress.Stage]
		case *gatewayv1.JobEvent_QueuePosition:
			stage = fmt.Sprintf("queued #%d", detail.QueuePosition)
		}
		state := strings.ToLower(strings.TrimPrefix(event.State.String(), "JOB_STATE_"))
		line := fmt.Sprintf("%s %s %d%%", state, stage, int(event.Progress*100+0.5))
		if terminal {
			fmt.Fprintf(os.Stderr, "\r%-40s", line)
		} else if stage != "" {
			fmt.Fprintln(os.Stderr, line)
		}
	}
}

func isTerminal(file *os.File) bool {
	info, err := file.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}

func usage(message string) {
	fmt.Fprintf(os.Stderr, "subtitler-go: %s\n", message)
	flag.Usage()
	os.Exit(2)
}

func fail(code int, format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "\nsubtitler-go: "+format+"\n", args...)
	os.Exit(code)
}
