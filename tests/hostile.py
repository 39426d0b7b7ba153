"""Hostile inputs for both ends of the rendezvous WebSocket: the server's fuzz and the client's.

`json_values` and `hostile_frames(types, fields)` are the strategies the server's fuzz
(tests/test_rendezvous_limits.py) sends to the server; the client's tests send the same shapes,
with the message types and fields a rendezvous would send. `GARBAGE_TEXTS` are fixed frames no
correct peer sends: broken or non-object JSON, nesting deep enough to make `json.loads` raise
RecursionError, a number too long for `int`, escaped lone surrogates, control characters.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

KEY = "ab" * 32
PLAUSIBLE = st.sampled_from(["demo", "r", "a" * 64])


def hostile_messages(types: list[str], fields: list[str]) -> st.SearchStrategy[str]:
    """JSON objects with a plausible or absurd `type` and a few plausible fields of any value."""
    return st.builds(
        lambda kind, body: json.dumps({**body, "type": kind}),
        st.sampled_from(types) | json_values,
        st.dictionaries(
            st.sampled_from(fields), json_values | st.sampled_from(["demo", "r", "a" * 64]), max_size=5
        ),
    )


def hostile_frames(types: list[str], fields: list[str]) -> st.SearchStrategy[list[str | bytes]]:
    """Sequences of text and binary frames: messages, plain text, bytes, bare JSON values."""
    return st.lists(
        hostile_messages(types, fields)
        | st.text(max_size=60)
        | st.binary(max_size=60)
        | json_values.map(json.dumps),
        min_size=1,
        max_size=12,
    )


ROSTER = '{"type":"roster","room":"r","host":"' + KEY + '","members":'
GARBAGE_TEXTS = [
    "",
    "{",
    "nope",
    "null",
    "[]",
    "[1, 2]",
    '"just a string"',
    '{"type":null}',
    '{"type":5}',
    '{"type":"x"}',
    "[" * 100_000,  # json.loads: RecursionError, not ValueError
    '{"a":' * 20_000,  # 100 KB: under both ends' frame limits
    "[" * 5_000 + "]" * 5_000,  # deep but complete: RecursionError too
    "1" * 5_000,  # int() refuses more than 4,300 digits: ValueError
    '{"type":"\\ud800"}',  # a lone surrogate, escaped
    '{"type":"error","code":' + "[" * 900 + "]" * 900 + ',"message":{"x":1}}',
    '{"type":"signal","from":"' + KEY + '\\n","data":{}}',  # a key with a trailing newline
    '{"type":"signal","from":"' + KEY.upper() + '","data":{}}',
    '{"type":"signal","from":"' + KEY + '","data":[]}',
    ROSTER + '"many"}',
    '{"type":"roster","room":"r","host":"zz","members":[]}',
    '{"type":"roster","room":"r\\n","host":"' + KEY + '","members":[]}',
    ROSTER + '[{"key":"' + KEY + '","name":"\\u001b[2J"}]}',
    ROSTER + '[{"key":"' + KEY + '","name":"' + "n" * 33 + '"}]}',  # too long a name
    ROSTER + "[" + ",".join(['{"key":"' + KEY + '","name":"twin"}'] * 2) + "]}",
    ROSTER + "[" + ",".join(["7"] * 300) + "]}",
    '{"type":"member_left","key":{"x":[1]}}',
    '{"type":"challenge","nonce":"' + "zz" * 32 + '"}',  # out of place once in the room
    '{"type":"welcome"}',
    "NaN",
    ROSTER + '[],"x":Infinity}',
]
