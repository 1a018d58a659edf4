"""The local journal: every record is appended here before it is shipped to PostgreSQL.

``format`` is the pure block format (encode, check, scan); ``segment`` owns the files
(rotation, fsync policy, recovery, reads for shipping, release of shipped segments).
"""

from __future__ import annotations

from logsvc.journal.format import (
    HEADER_SIZE,
    HEADER_SIZE_V1,
    HEADER_SIZE_V2,
    MAGIC,
    MAGIC_V1,
    MAGIC_V2,
    MAX_BLOCK_PAYLOAD,
    MAX_ROW_FORMAT,
    ROW_FORMAT_DEFAULT,
    ROW_FORMAT_V1,
    BadRange,
    BlockInfo,
    ScanResult,
    check_block,
    decode_block,
    drop_rows,
    encode_block,
    encode_block_v1,
    encode_header,
    encode_header_v1,
    scan,
    torn_block_count,
)
from logsvc.journal.segment import (
    FSYNC_POLICIES,
    RESERVED_FILE,
    SEQ_RESERVE_STEP,
    Block,
    CorruptRange,
    Journal,
    RecoveryReport,
    segment_name,
)

__all__ = [
    "FSYNC_POLICIES",
    "HEADER_SIZE",
    "HEADER_SIZE_V1",
    "HEADER_SIZE_V2",
    "MAGIC",
    "MAGIC_V1",
    "MAGIC_V2",
    "MAX_BLOCK_PAYLOAD",
    "MAX_ROW_FORMAT",
    "RESERVED_FILE",
    "ROW_FORMAT_DEFAULT",
    "ROW_FORMAT_V1",
    "SEQ_RESERVE_STEP",
    "BadRange",
    "Block",
    "BlockInfo",
    "CorruptRange",
    "Journal",
    "RecoveryReport",
    "ScanResult",
    "check_block",
    "decode_block",
    "drop_rows",
    "encode_block",
    "encode_block_v1",
    "encode_header",
    "encode_header_v1",
    "scan",
    "segment_name",
    "torn_block_count",
]
