//! Classic libpcap capture files (magic `a1b2c3d4`, microsecond timestamps,
//! LINKTYPE_ETHERNET), as `tcpdump -r` and Wireshark read them.
//!
//! The writer is buffered; the caller flushes it on a timer and at exit. It does not rotate
//! files or capture per port: every frame the switch receives goes into one file.

#![deny(unsafe_code)]

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub const MAGIC: u32 = 0xa1b2_c3d4;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const SNAPLEN: u32 = 262_144;

/// The 24-byte global header.
pub fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone, sigfigs = 0
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// The 16-byte header of one record.
pub fn record_header(t: SystemTime, caplen: usize, origlen: usize) -> [u8; 16] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(d.as_secs() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&d.subsec_micros().to_le_bytes());
    h[8..12].copy_from_slice(&(caplen as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(origlen as u32).to_le_bytes());
    h
}

/// A capture file being written.
pub struct PcapWriter<W: Write> {
    out: std::io::BufWriter<W>,
    dirty: bool,
    /// Set after a write error: capture stops, the switch goes on.
    failed: bool,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(w: W) -> std::io::Result<PcapWriter<W>> {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, w);
        out.write_all(&file_header())?;
        out.flush()?;
        Ok(PcapWriter {
            out,
            dirty: false,
            failed: false,
        })
    }

    pub fn write_frame(&mut self, t: SystemTime, frame: &[u8]) {
        if self.failed {
            return;
        }
        let cap = frame.len().min(SNAPLEN as usize);
        let r = self
            .out
            .write_all(&record_header(t, cap, frame.len()))
            .and_then(|_| self.out.write_all(&frame[..cap]));
        if let Err(e) = r {
            log::error!("pcap: write failed, capture stopped: {e}");
            self.failed = true;
        }
        self.dirty = true;
    }

    pub fn flush(&mut self) {
        if self.dirty && !self.failed {
            if let Err(e) = self.out.flush() {
                log::error!("pcap: flush failed, capture stopped: {e}");
                self.failed = true;
            }
            self.dirty = false;
        }
    }

    pub fn get_ref(&self) -> &W {
        self.out.get_ref()
    }

    pub fn into_inner(mut self) -> Option<W> {
        self.flush();
        self.out.into_inner().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(
            UNIX_EPOCH + std::time::Duration::from_micros(1_000_002),
            &[7u8; 60],
        );
        let b = w.into_inner().unwrap();
        assert_eq!(&b[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(b.len(), 24 + 16 + 60);
        assert_eq!(&b[24..28], &1u32.to_le_bytes());
        assert_eq!(&b[28..32], &2u32.to_le_bytes());
        assert_eq!(&b[32..36], &60u32.to_le_bytes());
    }
}
