"""Using trained models: what happens between a network's logits and a label map a reader sees."""
