"""Python baseline for `simgan bench --sections ingest`: the UnityEyes crop (carpedm20's fixed
140x84 box around the centre of interior_margin_2d's bounding box, grayscale, resize to 55x35,
PNG) with PIL, written to Parquet with pyarrow, on one core. Prints JSON.

usage: pil_ingest.py SRC_DIR OUT.parquet
"""
import glob
import io
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def points(s):
    return [tuple(float(v) for v in p.strip("()").split(",")[:2]) for p in s]


src, out = sys.argv[1], sys.argv[2]
t = time.perf_counter()
ids, pngs, gazes = [], [], []
for jpath in sorted(glob.glob(os.path.join(src, "*.json")), key=lambda p: int(os.path.basename(p)[:-5])):
    with open(jpath) as f:
        d = json.load(f)
    img = Image.open(jpath[:-5] + ".jpg")
    h = img.height
    pts = [(x, h - y) for x, y in points(d["interior_margin_2d"])]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    box = (int(round(cx - 70)), int(round(cy - 42)), int(round(cx - 70)) + 140, int(round(cy - 42)) + 84)
    eye = img.convert("L").crop(box).resize((55, 35), Image.BILINEAR)
    buf = io.BytesIO()
    eye.save(buf, format="PNG")
    x, y, z, _ = (float(v) for v in d["eye_details"]["look_vec"].strip("()").split(","))
    ids.append(os.path.basename(jpath)[:-5])
    pngs.append({"bytes": buf.getvalue(), "path": None})
    gazes.append([x, -y, z])
table = pa.table({"id": ids, "image": pngs, "gaze": gazes})
pq.write_table(table, out)
elapsed = time.perf_counter() - t
print(json.dumps({"files": len(ids), "seconds": elapsed, "images_per_s": len(ids) / elapsed}))
