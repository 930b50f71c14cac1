"""Converters from other annotation formats to COCO json (numpy/stdlib + PIL only)."""
