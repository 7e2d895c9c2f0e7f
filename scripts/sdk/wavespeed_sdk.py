"""wavespeed 2.0.5, unchanged, against kiln over HTTP: t2v, i2v through its upload API."""
import os

from common import HTTP, KEY, check_mp4, first_frame_png

os.environ["WAVESPEED_API_KEY"] = KEY  # read at import
from wavespeed import Client  # noqa: E402

client = Client(base_url=f"http://{HTTP}")
out = client.run("kwaivgi/kling-v2.1-t2v-master",
                 {"prompt": "a red circle moves right", "aspect_ratio": "16:9", "duration": 5, "guidance_scale": 0.5},
                 poll_interval=0.2)
check_mp4(out["outputs"][0], "wavespeed t2v")

url = client.upload(first_frame_png())
out = client.run("kwaivgi/kling-v2.1-i2v-master", {"prompt": "the red square moves right", "image": url},
                 poll_interval=0.2)
check_mp4(out["outputs"][0], "wavespeed i2v")
