"""Hugging Face checkpoint key maps, one module per architecture: `from_pretrained(dir)` and
`save_pretrained(model, dir, zupu_meta)`."""
