//! ChannelData framing. See RFC 8656 §12.4.

use super::{DecodeError, read_u16};

/// Length of the ChannelData header: channel number and length.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// A parsed ChannelData message borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number (0x4000..=0x7FFF on the wire; bound channels are 0x4000..=0x4FFF).
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
        if !(0x4000..=0x7FFF).contains(&channel) {
            return Err(DecodeError::NotChannelData);
        }
        let len = usize::from(read_u16(buf, 2));
        let data = buf
            .get(CHANNEL_DATA_HEADER_LEN..CHANNEL_DATA_HEADER_LEN + len)
            .ok_or(DecodeError::Truncated)?;
        Ok(Self { channel, data })
    }
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
