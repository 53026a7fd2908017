"""NLVR2 (natural language for visual reasoning over image pairs): data format and official metrics."""
