"""Training GeoSANE with Accelerate: ``training/train.py`` (the script: its loop), ``model_setup`` (config, optimizer,
schedule), ``checkpointing`` (staged checkpoints, resume, pre-flight checks), ``evaluation`` (held-out R^2), its
config, data path and model card."""
