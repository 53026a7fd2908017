"""Visual grounding (referring expression comprehension) on RefCOCO, RefCOCO+ and RefCOCOg."""
