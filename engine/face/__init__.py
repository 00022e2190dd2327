"""Face analysis: MediaPipe's FaceLandmarker and selfie segmenter, and the parsing built from them."""
