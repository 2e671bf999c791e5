#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (git-ignored).

Seeds are realistic payloads: the robot message and card callback JSON of
ingress/src/normalize.rs's tests and PROTOCOL.md §2.2/§4.6b, and the §1.7 vectors.
Input formats are described at the top of fuzz_targets/callback.rs and decrypt_raw.rs.

    python3 fuzz/seeds/make_seeds.py
"""
import base64
import hashlib
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

V1 = dict(token="mryue", key="Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7", rid="ding6ccabc44d2c8d38b",
          sig="03044561471240d4a14bb09372dfcfd4fd0e40cb", ts="1608001896814", nonce="WL4PK6yA",
          enc="0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDCYxxOK+HZeKju4yhELOFchzNukR+t8SB/qk4ROMu3")
V3 = dict(token="123456", key="4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij", rid="suite4xxxxxxxxxxxxxxx",
          sig="5a65ceeef9aab2d149439f82dc191dd6c5cbe2c0", ts="1445827045067", nonce="nEXhMP4r",
          enc="1a3NBxmCFwkCJvfoQ7WhJHB+iX3qHPsc9JbaDznE1i03peOk1LaOQoRz3+nlyGNhwmwJ3vDMG+OzrHMeiZI7gTRWVdUBmfxjZ8Ej23JVYa9VrYeJ5as7XM/ZpulX8NEQis44w53h1qAgnC3PRzM7Zc/D6Ibr0rgUathB6zRHP8PYrfgnNOS9PhSBdHlegK+AGGanfwjXuQ9+0pZcy0w9lQ==",
          plain='{"EventType":"check_create_suite_url","Random":"LPIdSnlF","TestSuiteKey":"suite4xxxxxxxxxxxxxxx"}')
V4 = dict(sig="bcf6dcefa4ce2dbaf7b0666c7264d46fd9aad4bd",
          enc="5DJFWzjRNOQk+5GSZxW+VrFMDWCIidPjEjg3//gm5x556BedVi62rDj1F9uXU97a4jw1R4FACUv9RCpoDobNqxhxRB2YtW901k4KHbP1/wpFJ3xdLG0n0A8U1VhENg80zKJd+YROR0YMGum4WYuoXJ6J98vt0ihYeIFoapNddLML5MyNAGM9saSpkouDMSvD+iU14i7V8ix1ia1Tb9ogog==")
D1 = dict(sig="73813ea128535f7945c17f81069c6b8045361375",
          enc="5DJFWzjRNOQk+5GSZxW+VpU/+Yf0KeplvXZ8LNdyQj5iN6tX2KSwwhy5oymzMpsFAiG4RS3L0/vY7TX4ZwLTFA==")

GROUP_TEXT = {"msgId": "msgABC", "msgtype": "text", "text": {"content": " hello "}, "conversationId": "cidXYZ==",
              "conversationType": "2", "conversationTitle": "ops", "senderId": "$:LWCP_v1:$abc",
              "senderStaffId": "user123", "senderNick": "Li", "senderCorpId": "dingcorp",
              "chatbotUserId": "$:LWCP_v1:$bot", "chatbotCorpId": "dingcorp", "robotCode": "dingappkey",
              "isAdmin": False, "isInAtList": True, "atUsers": [{"dingtalkId": "$:LWCP_v1:$bot"}],
              "createAt": 1700000000000,
              "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=s1",
              "sessionWebhookExpiredTime": 1700005400000}
CARD = {"type": "actionCallback", "outTrackId": "cmd-42", "corpId": "dingcorp", "userId": "user123",
        "userIdType": 1, "spaceType": "IM_GROUP", "spaceId": "cidXYZ==",
        "content": "{\"cardPrivateData\":{\"actionIds\":[\"confirm\"],\"params\":{\"action\":\"confirm\"}}}",
        "extension": "{}"}
LEGACY_CARD = {"msgId": "m1", "EventType": "chatbot_card_callback", "senderStaffId": "u1",
               "conversationId": "cid1", "conversationType": "2", "value": "{\"action\":\"end_conversation\"}"}


def variant(base, **changes):
    out = dict(base)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def compact(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


BODIES = [
    GROUP_TEXT,
    variant(GROUP_TEXT, conversationType="1", isInAtList=None),
    variant(GROUP_TEXT, msgtype="richText", content={"richText": [
        {"text": "look "}, {"type": "picture", "downloadCode": "dc1", "pictureDownloadCode": "pdc1"},
        {"type": "at", "atName": "bot", "atUserId": "u"}, {"text": "here"}]}),
    variant(GROUP_TEXT, msgtype="audio", content={"downloadCode": "a1", "duration": "3", "recognition": "你好"}),
    variant(GROUP_TEXT, msgtype="file", content={"downloadCode": "f1", "fileName": "a.pdf", "spaceId": "s", "fileId": "f"}),
    variant(GROUP_TEXT, msgtype="picture", content={"downloadCode": "p1", "pictureDownloadCode": "p2"}),
    variant(GROUP_TEXT, msgtype="video", content={"downloadCode": "v1", "duration": "9", "videoType": "mp4"}),
    variant(GROUP_TEXT, msgtype="chatRecord", isInAtList=None, conversationType=2,
            sessionWebhookExpiredTime="1700005400000"),
    CARD,
    variant(CARD, spaceType="IM_ROBOT", content={"cardPrivateData": {"actionIds": ["a", "b"]}}),
    LEGACY_CARD,
    {"msgId": "m2", "actionCallback": {"value": {"id": "approve"}}, "userId": "u2", "conversationType": "1"},
    {"EventType": "user_add_org", "EventId": "e1", "UserId": ["u1"], "CorpId": "dingcorp", "TimeStamp": "1700000000000"},
    {"EventType": "bpms_task_change", "processInstanceId": "p", "type": "finish", "result": "agree"},
]


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def nul(*parts):
    return b"\0".join(p if isinstance(p, bytes) else p.encode() for p in parts)


def sign(token, ts, nonce, enc):
    return hashlib.sha1("".join(sorted([token, ts, nonce, enc])).encode()).hexdigest()


def layout(msg, rid=V3["rid"], prefix=b"1234567890123456", pad_to=32):
    body = prefix + struct.pack(">I", len(msg)) + msg + rid.encode()
    pad = pad_to - len(body) % pad_to
    return body + bytes([pad]) * pad


def main():
    # callback, mode 0 (plain body + query) and mode 4 (the same on the /card route).
    for i, body in enumerate(BODIES):
        write("callback", f"plain-{i:02}", bytes([0]) + compact(body))
    write("callback", "plain-card-route", bytes([4]) + compact(CARD))
    # Regression: an expiry in 100 000 000 000 000 ms BC (year -1199) used to make `publish` panic.
    write("callback", "regression-negative-year-expiry",
          bytes([0]) + compact(variant(GROUP_TEXT, sessionWebhookExpiredTime=-100000000000000)))
    for name, vec in [("v3", V3), ("v1", V1)]:
        write("callback", f"plain-encrypt-{name}",
              bytes([0]) + nul(compact({"encrypt": vec["enc"]}), vec["sig"], vec["ts"], vec["nonce"]))
    write("callback", "plain-encrypt-v4",
          bytes([0]) + nul(compact({"encrypt": V4["enc"]}), V4["sig"], V3["ts"], V3["nonce"]))
    # mode 1: sealed with the real key.
    for i, body in enumerate(BODIES + [json.loads(V3["plain"]), {"EventType": "check_url"}]):
        write("callback", f"sealed-{i:02}", bytes([1]) + nul(compact(body), V3["ts"], V3["nonce"], "1234567890123456"))
    write("callback", "sealed-card-route", bytes([5]) + nul(compact(CARD), V3["ts"], V3["nonce"], ""))
    write("callback", "sealed-success", bytes([1]) + nul("success", V3["ts"], V3["nonce"], ""))
    # mode 2: arbitrary encrypt text.
    for name, enc, sig in [("v3", V3["enc"], V3["sig"]), ("v4", V4["enc"], V4["sig"]),
                           ("d1", D1["enc"], D1["sig"]), ("v1", V1["enc"], V1["sig"])]:
        write("callback", f"decrypt-{name}", bytes([2]) + nul(enc, sig, V3["ts"], V3["nonce"]))
    write("callback", "decrypt-v3-badnonce", bytes([2]) + nul(V3["enc"], V3["sig"], V3["ts"], "xxxxx"))
    # mode 3: auth strings.
    write("callback", "auth-v3", bytes([3]) + nul(V3["sig"], V3["token"], V3["ts"], V3["nonce"], V3["key"]))
    write("callback", "auth-v1", bytes([3]) + nul(V1["sig"], V1["token"], V1["ts"], V1["nonce"], V1["key"]))
    write("callback", "auth-robot", bytes([3]) + nul("testAppSecret123", "1577262236757",
                                                    "/u/NmL78bEwbWCrXKtyloL0DktNIZ2Q7oKeLE4xd5wU=", "1577262236757",
                                                    struct.pack("<q", 1577262236757)))
    write("callback", "auth-key", bytes([3 | 8]) + nul(V3["key"], "token", "-1", "+1", V1["key"]))

    # decrypt_raw: ciphertexts (selector 0) and chosen plaintexts (selector 1 / 3).
    for name, enc in [("v1", V1["enc"]), ("v3", V3["enc"]), ("v4", V4["enc"]), ("d1", D1["enc"])]:
        write("decrypt_raw", f"ciphertext-{name}", bytes([0]) + base64.b64decode(enc))
    for i, body in enumerate(BODIES):
        write("decrypt_raw", f"plaintext-{i:02}", bytes([1]) + layout(compact(body)))
    write("decrypt_raw", "plaintext-v3", bytes([1]) + layout(V3["plain"].encode()))
    write("decrypt_raw", "plaintext-card-route", bytes([5]) + layout(compact(CARD)))
    write("decrypt_raw", "plaintext-pad16", bytes([1]) + layout(b'{"EventType":"padded_to_16"}', pad_to=16))
    write("decrypt_raw", "plaintext-success-autopad",
          bytes([3]) + b"1234567890123456" + struct.pack(">I", 7) + b"success" + V3["rid"].encode())
    write("decrypt_raw", "plaintext-other-rid", bytes([1]) + layout(b"{}", rid="dingotherapp"))


if __name__ == "__main__":
    main()
