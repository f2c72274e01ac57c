"""Alignment: verifiable rewards, SFT, DPO and GRPO as pure functions over explicit pytrees."""
