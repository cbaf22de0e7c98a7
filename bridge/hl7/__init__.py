"""HL7 v2 at the edge: ER7 tokenizing, charsets, ACKs and MLLP transport."""

from bridge.hl7.ack import (
    AckControlIds,
    ErrorDetail,
    build_ack,
    echo,
    hl7_error_text,
    read_header,
    read_header_bytes,
)
from bridge.hl7.charset import (
    CharsetError,
    DecodedFrame,
    codec_for,
    decode_frame,
    dicom_charset_for,
    encode_text,
    read_msh18,
)
from bridge.hl7.client import MllpClient, ack_code_of, acked_control_id_of, split_messages
from bridge.hl7.message import (
    Delimiters,
    HL7LimitError,
    HL7ParseError,
    Limits,
    Message,
    Segment,
    escape,
    parse_header,
    parse_message,
    unescape,
)
from bridge.hl7.mllp import Frame, FrameDecoder, OversizeFrame, encode_frame
from bridge.hl7.server import ConnectionLimits, FrameHandler, MllpServer

__all__ = [
    "AckControlIds",
    "CharsetError",
    "ConnectionLimits",
    "DecodedFrame",
    "Delimiters",
    "ErrorDetail",
    "Frame",
    "FrameDecoder",
    "FrameHandler",
    "HL7LimitError",
    "HL7ParseError",
    "Limits",
    "Message",
    "MllpClient",
    "MllpServer",
    "OversizeFrame",
    "Segment",
    "ack_code_of",
    "acked_control_id_of",
    "build_ack",
    "codec_for",
    "decode_frame",
    "dicom_charset_for",
    "echo",
    "encode_frame",
    "encode_text",
    "escape",
    "hl7_error_text",
    "parse_header",
    "parse_message",
    "read_header",
    "read_header_bytes",
    "read_msh18",
    "split_messages",
    "unescape",
]
