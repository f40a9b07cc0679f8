"""Live captions: admission of streams against measured ASR capacity, the audio a stream sends, the
decoder that turns it into partial and final results, and one stream's transcriber (stream.py) with
its parts (settings, buffer, pacing, utterance, agreement, context, final_decode, finals, results)."""
