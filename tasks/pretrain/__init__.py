"""LXMERT-style pre-training (``nas pretrain``): corpus files, masking, heads and the task."""
