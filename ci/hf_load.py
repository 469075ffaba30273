"""Third reader for the tests: Hugging Face `datasets` loads simgan shard folders.

usage: hf_load.py FOLDER... ; prints one JSON line per folder: the features `datasets` inferred,
the type and mode of the first row's image, and the first row's other values.
"""
import json
import sys

from datasets import load_dataset
from PIL import Image

for folder in sys.argv[1:]:
    d = load_dataset("parquet", data_files=f"{folder}/*.parquet", split="train")
    row = d[0]
    img = row["image"]
    print(json.dumps({
        "folder": folder,
        "rows": len(d),
        "features": {k: repr(v) for k, v in d.features.items()},
        "image_is_pil": isinstance(img, Image.Image),
        "image_mode": getattr(img, "mode", None),
        "image_size": list(getattr(img, "size", [])),
        "values": {k: (v if isinstance(v, (str, int, float, bool, list, type(None))) else repr(type(v)))
                   for k, v in row.items() if k != "image"},
    }))
