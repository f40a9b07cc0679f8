"""The audio service: decodes media once into shared memory and hands out handles."""
