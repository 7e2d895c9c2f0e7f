"""fal-client 1.0.3, unchanged, against kiln: queue (subscribe with logs), sync run, i2v."""
import os

from common import FAL_RUN, HTTPS, KEY, check_mp4, first_frame_png

# fal's SDK reads its hosts at import and hard-codes https://.
os.environ["FAL_RUN_HOST"] = FAL_RUN
os.environ["FAL_QUEUE_RUN_HOST"] = HTTPS
os.environ["FAL_KEY"] = KEY
import fal_client  # noqa: E402

T2V = "fal-ai/kling-video/v2.1/master/text-to-video"
I2V = "fal-ai/kling-video/v2.1/master/image-to-video"

updates = []
result = fal_client.subscribe(
    T2V,
    arguments={"prompt": "a red circle moves right", "duration": "5", "aspect_ratio": "16:9", "cfg_scale": 0.5},
    with_logs=True,
    on_queue_update=updates.append,
)
kinds = {type(u).__name__ for u in updates}
assert "Completed" in kinds or updates, f"no queue updates seen: {updates}"
print(f"ok  fal subscribe t2v: updates {sorted(kinds)}")
check_mp4(result["video"]["url"], "fal t2v")

image = fal_client.encode_file(first_frame_png())
result = fal_client.subscribe(I2V, arguments={"prompt": "the red square moves right", "image_url": image, "duration": "5"})
check_mp4(result["video"]["url"], "fal i2v")

handle = fal_client.submit(T2V, arguments={"prompt": "a blue triangle moves up", "aspect_ratio": "1:1"})
status = fal_client.status(T2V, handle.request_id, with_logs=True)
print(f"ok  fal status by id: {type(status).__name__}")
result = handle.get()
check_mp4(result["video"]["url"], "fal submit/get")

result = fal_client.run(T2V, arguments={"prompt": "a green square moves left", "aspect_ratio": "9:16"})
check_mp4(result["video"]["url"], "fal run (sync host)")

try:
    fal_client.subscribe(T2V, arguments={"prompt": "x", "cfg_scale": 3})
    raise SystemExit("cfg_scale 3 was accepted")
except fal_client.client.FalClientHTTPError as e:
    assert e.status_code == 422, e
    print(f"ok  fal validation error: {e.status_code} {str(e)[:100]}")
