"""Media I/O: decoding clips and audio with ffmpeg (from imageio-ffmpeg), encoding H.264 + AAC."""
