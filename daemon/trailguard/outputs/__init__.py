"""Where detections go: JSON Lines on a file or stdout, durably and once per eventID."""
