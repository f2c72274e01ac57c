"""Custom kernels: Pallas FlashAttention-2 (flash_attention) and fused RMSNorm (rms_norm; Triton in
rms_norm_triton). Each module has a plain-jnp reference; on CPU the Pallas kernels run interpreted."""
