"""Audio transport: decoded audio in POSIX shared memory, handed out as handles, read by the stage
services, and raw PCM inside messages."""
