"""Image-text matching (cross-modal retrieval) on Flickr30K and MS-COCO (SCAN precomp)."""
