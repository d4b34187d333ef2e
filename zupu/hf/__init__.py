"""Hugging Face checkpoint interop: one module per architecture (`zupu.hf.<member module>`), each with
`from_pretrained(dir, dtype=torch.float32) -> model` and `save_pretrained(model, dir, zupu_meta)`; all of them
read weights through the one shared reader, `zupu.hf.tensors`."""
