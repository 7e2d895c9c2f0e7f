"""runware 0.5.24, unchanged, against kiln over WebSocket: t2v, i2v (local file), cost."""
import asyncio
import os

from common import HTTP, KEY, check_mp4, first_frame_png

os.environ["RUNWARE_VIDEO_INITIAL_TIMEOUT"] = "30000"
os.environ["RUNWARE_VIDEO_POLLING_DELAY"] = "500"
from runware import IInputFrame, IVideoInference, IVideoInputs, Runware  # noqa: E402


async def main() -> None:
    rw = Runware(api_key=KEY, url=f"ws://{HTTP}/v1")
    await rw.connect()
    ack = await rw.videoInference(requestVideo=IVideoInference(
        model="klingai:5@3", positivePrompt="a red circle moves right",
        width=112, height=64, duration=5, CFGScale=0.5, includeCost=True, numberResults=1))
    videos = await rw.getResponse(taskUUID=ack.taskUUID, numberResults=1)
    assert videos and videos[0].videoURL, videos
    print(f"ok  runware t2v: cost {videos[0].cost}, seed {videos[0].seed}")
    check_mp4(videos[0].videoURL, "runware t2v")

    ack = await rw.videoInference(requestVideo=IVideoInference(
        model="klingai:5@3", positivePrompt="the red square moves right", width=112, height=64,
        duration=5, inputs=IVideoInputs(frameImages=[IInputFrame(image=first_frame_png(), frame="first")])))
    videos = await rw.getResponse(taskUUID=ack.taskUUID, numberResults=1)
    check_mp4(videos[0].videoURL, "runware i2v")
    await rw.disconnect()


asyncio.run(main())
