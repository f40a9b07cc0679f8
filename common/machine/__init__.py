"""The machine a service runs on: hardware detection, CPU pinning, settings derived from the
hardware, measured capacity, native thread limits and malloc tuning, applied once at start."""
