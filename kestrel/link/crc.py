"""CRC-16-CCITT as CCSDS uses it (TM/TC FECF, Space Packet error control).

Polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; the
check value for b"123456789" is 0x29B1.
"""
import crcmod

crc16_ccitt = crcmod.mkCrcFun(0x11021, initCrc=0xFFFF, rev=False, xorOut=0x0000)
