"""Hugging Face checkpoint interop: one module per architecture (`zupu.hf.<member module>`), each with
`from_pretrained(dir) -> model` and `save_pretrained(model, dir, zupu_meta)`."""
