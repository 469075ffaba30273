"""Second reader for the tests: pyarrow reads simgan shards straight from S3 (moto).

usage: read_back.py BUCKET KEY... ; prints a JSON report on stdout.
"""
import io
import json
import os
import sys

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

bucket, keys = sys.argv[1], sys.argv[2:]
endpoint = os.environ["AWS_ENDPOINT"]
fs = pafs.S3FileSystem(
    endpoint_override=endpoint.split("://", 1)[1],
    scheme=endpoint.split("://", 1)[0],
    access_key=os.environ["AWS_ACCESS_KEY_ID"],
    secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
    region=os.environ.get("AWS_REGION", "us-east-1"),
)
table = pq.ParquetDataset([f"{bucket}/{k}" for k in keys], filesystem=fs).read()
hf = json.loads(table.schema.metadata[b"huggingface"])
first = table.column("image")[0].as_py()
img = Image.open(io.BytesIO(first["bytes"]))
gaze = table.column("gaze")[0].as_py()
print(json.dumps({
    "rows": table.num_rows,
    "columns": table.column_names,
    "hf_image_type": hf["info"]["features"]["image"]["_type"],
    "image_size": list(img.size),
    "image_mode": img.mode,
    "gaze_len": len(gaze),
    "ids": table.column("id").to_pylist(),
}))
