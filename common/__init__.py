"""What every service of the suite shares, by concern:

- `config`, `errors`, `transcript`: typed configuration from the environment,
  the domain errors engines raise, the domain types of a transcript;
- `rpc/`: the RPC runtime (server bootstrap, status, error mapping, channels,
  TLS, logging, metrics, proto conversions);
- `machine/`: hardware detection, CPU pinning, tuning and measured capacity;
- `audio/`: decoded audio in shared memory and its handles;
- `speech/`: Whisper models, word timing and languages (asr and align).
"""
