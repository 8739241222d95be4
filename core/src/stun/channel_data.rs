//! ChannelData framing and channel numbers. See RFC 8656 §12.

use std::fmt;
use std::ops::Range;

use super::{DecodeError, padded, read_u16};

/// Length of the ChannelData header: channel number and length.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// A parsed ChannelData message borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number, within [`ChannelNumber::MIN`]..=[`ChannelNumber::MAX`].
    pub channel: u16,
    /// The application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses ChannelData from the start of `buf`. Bytes beyond the declared length (padding
    /// on streams, or trailing bytes of a datagram) are ignored. See RFC 8656 §12.5.
    ///
    /// # Errors
    ///
    /// Returns [`DecodeError::NotChannelData`] when the first two bits are not `01` and
    /// [`DecodeError::Truncated`] when the buffer is shorter than the declared length.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < CHANNEL_DATA_HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        let channel = read_u16(buf, 0);
        if ChannelNumber::new(channel).is_none() {
            return Err(DecodeError::NotChannelData);
        }
        let len = usize::from(read_u16(buf, 2));
        let data = buf
            .get(CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + len)
            .ok_or(DecodeError::Truncated)?;
        Ok(Self { channel, data })
    }

    /// Returns the channel number as its type (`parse` checked the range).
    pub fn number(&self) -> ChannelNumber {
        ChannelNumber(self.channel)
    }
}

/// A channel number. RFC 8656 §12 allots 0x4000–0x4FFF to channels, but RFC 5766 allowed
/// 0x4000–0x7FFF and clients still in use (coturn's own, older libwebrtc) pick from all of it,
/// so this server accepts the wider range, in ChannelBind and in ChannelData alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelNumber(u16);

impl ChannelNumber {
    /// The lowest channel number. See RFC 8656 §12.
    pub const MIN: u16 = 0x4000;
    /// The highest channel number RFC 8656 §12 allots.
    pub const RFC8656_MAX: u16 = 0x4FFF;
    /// The highest channel number accepted (RFC 5766 §11).
    pub const MAX: u16 = 0x7FFF;

    /// Returns the channel number `n`, or `None` outside [`Self::MIN`]..=[`Self::MAX`].
    pub const fn new(n: u16) -> Option<Self> {
        if n >= Self::MIN && n <= Self::MAX {
            Some(Self(n))
        } else {
            None
        }
    }

    /// Returns the number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ChannelNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

impl fmt::LowerHex for ChannelNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl From<ChannelNumber> for u16 {
    fn from(n: ChannelNumber) -> Self {
        n.0
    }
}

/// Frames `buf[payload]` as ChannelData on `channel` in place: writes the header into the four
/// bytes in front of it and, with `pad` (stream transports, RFC 8656 §12.5), zeroes the bytes
/// up to the next multiple of four after it. Returns the framed range, or `None` when the
/// header or padding does not fit in `buf` or the payload is longer than 65,535 bytes. No
/// allocation: this runs per packet.
#[inline]
pub fn write_channel_data(
    buf: &mut [u8],
    payload: Range<usize>,
    channel: ChannelNumber,
    pad: bool,
) -> Option<Range<usize>> {
    let len = u16::try_from(payload.len()).ok()?;
    let start = payload.start.checked_sub(CHANNEL_DATA_HEADER_LEN)?;
    let end = if pad {
        let end = payload.start + padded(payload.len());
        buf.get_mut(payload.end..end)?.fill(0);
        end
    } else {
        payload.end
    };
    write_channel_data_header(&mut buf[start..], channel.0, len);
    Some(start..end)
}

/// Writes a ChannelData header for `len` bytes of data on `channel` into `out[..4]`.
///
/// # Panics
///
/// Panics if `out` is shorter than four bytes (a caller bug).
pub fn write_channel_data_header(out: &mut [u8], channel: u16, len: u16) {
    out[..2].copy_from_slice(&channel.to_be_bytes());
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_ignores_padding() {
        let cd = ChannelData::parse(&[0x40, 0x01, 0, 3, 1, 2, 3, 0]).unwrap();
        assert_eq!(cd.channel, 0x4001);
        assert_eq!(cd.data, &[1, 2, 3]);
    }

    #[test]
    fn frames_in_place_with_and_without_padding() {
        let ch = ChannelNumber::new(0x4001).unwrap();
        let mut buf = [0xEEu8; 12];
        buf[4..7].copy_from_slice(b"abc");
        assert_eq!(write_channel_data(&mut buf, 4..7, ch, false), Some(0..7));
        assert_eq!(&buf[..7], &[0x40, 0x01, 0, 3, b'a', b'b', b'c']);
        assert_eq!(write_channel_data(&mut buf, 4..7, ch, true), Some(0..8));
        assert_eq!(buf[7], 0);
        assert_eq!(write_channel_data(&mut buf, 2..7, ch, false), None);
        assert_eq!(ChannelNumber::new(0x3FFF), None);
        assert_eq!(ChannelNumber::new(0x8000), None);
    }

    #[test]
    fn rejects_short_and_non_channel() {
        assert_eq!(
            ChannelData::parse(&[0x40, 0x01, 0, 3, 1]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            ChannelData::parse(&[0x00, 0x01, 0, 0]),
            Err(DecodeError::NotChannelData)
        );
        assert_eq!(
            ChannelData::parse(&[0x80, 0x01, 0, 0]),
            Err(DecodeError::NotChannelData)
        );
    }
}
