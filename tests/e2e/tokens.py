"""Access tokens for the test clients (livekit-api)."""
import warnings
warnings.filterwarnings("ignore", message="The HMAC key")

import os
from livekit import api

URL = os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880")
KEY = os.environ.get("LIVEKIT_API_KEY", "devkey")
SECRET = os.environ.get("LIVEKIT_API_SECRET", "secret")


def token(identity, room, publish, subscribe):
    grants = api.VideoGrants(
        room_join=True, room=room, can_publish=publish, can_subscribe=subscribe
    )
    return api.AccessToken(KEY, SECRET).with_identity(identity).with_grants(grants).to_jwt()
