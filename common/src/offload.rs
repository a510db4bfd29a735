//! TCP segmentation and coalescing at an uplink, as a NIC's TSO and the kernel's GRO do.
//!
//! The nodes of a LAN use 64 KiB frames among themselves; an uplink carries what its underlay
//! MTU allows (1464-byte frames on a 1500-byte network). Rather than making every TCP
//! connection that crosses the uplink use small segments, the switch cuts a TCP frame too
//! large for the uplink into segments that fit ([`segment`]: headers copied, sequence
//! numbers, lengths, IPv4 ids and checksums redone, FIN/PSH on the last only, CWR on the
//! first only), and glues consecutive segments of one connection that arrive together back
//! into one frame for the local node ([`Coalescer`]), as long as the port it goes to takes
//! the size. Per 64 KiB, the nodes' stacks then handle one frame instead of about 45. A stack
//! daemon with an uplink shortcut (`stackd/src/direct.rs`) cuts its frames here too.
//!
//! Only plain cases are touched: Ethernet with at most one 802.1Q tag, IPv4 without options
//! or fragments, IPv6 without extension headers. Everything else passes unchanged (and a
//! frame too large for the uplink that is not such TCP is dropped and counted, as on any
//! port).

use crate::csum;
use std::io::IoSlice;
use std::ops::Range;

/// Most bytes handed to one segmentation-offload send (`UDP_SEGMENT`: the kernel takes at most
/// 64 KiB of UDP payload), and most segments in one.
pub const GSO_BYTES: usize = 60 * 1024;
pub const GSO_SEGMENTS: usize = 64;

/// How many datagrams of `unit` bytes one segmentation-offload send carries.
pub fn per_send(unit: usize) -> usize {
    (GSO_BYTES / unit).clamp(1, GSO_SEGMENTS)
}

/// The segments [`segment_parts`] laid out (headers in `hdrs`, payload in `frame`), as the
/// gather lists of the segmentation-offload sends of `unit`-byte datagrams that carry them,
/// in order.
pub fn send_groups<'a>(
    hdrs: &'a [u8],
    parts: &'a [(Range<usize>, Range<usize>)],
    frame: &'a [u8],
    unit: usize,
) -> impl Iterator<Item = Vec<IoSlice<'a>>> + 'a {
    parts.chunks(per_send(unit)).map(move |group| {
        group
            .iter()
            .flat_map(|(h, p)| {
                [
                    IoSlice::new(&hdrs[h.clone()]),
                    IoSlice::new(&frame[p.clone()]),
                ]
            })
            .collect()
    })
}

const TCP: u8 = 6;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const CWR: u8 = 0x80;

/// Where the parts of a TCP frame lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tcp {
    /// Offset of the IP header.
    l3: usize,
    v4: bool,
    /// Offset of the TCP header.
    l4: usize,
    /// End of the TCP header (start of the payload).
    data: usize,
    /// End of the IP packet (Ethernet padding excluded).
    end: usize,
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn parse(f: &[u8]) -> Option<Tcp> {
    if f.len() < 14 {
        return None;
    }
    let (ethertype, l3) = match be16(f, 12) {
        0x8100 if f.len() >= 18 => (be16(f, 16), 18),
        t => (t, 14),
    };
    let (v4, l4, end) = match ethertype {
        0x0800 => {
            let ip = f.get(l3..l3 + 20)?;
            // No options, not a fragment, TCP.
            if ip[0] != 0x45 || ip[9] != TCP || be16(ip, 6) & 0x3fff != 0 {
                return None;
            }
            (true, l3 + 20, l3 + be16(ip, 2) as usize)
        }
        0x86dd => {
            let ip = f.get(l3..l3 + 40)?;
            if ip[0] >> 4 != 6 || ip[6] != TCP {
                return None;
            }
            (false, l3 + 40, l3 + 40 + be16(ip, 4) as usize)
        }
        _ => return None,
    };
    let doff = ((*f.get(l4 + 12)? >> 4) as usize) * 4;
    let data = l4 + doff;
    if doff < 20 || end > f.len() || data > end {
        return None;
    }
    Some(Tcp {
        l3,
        v4,
        l4,
        data,
        end,
    })
}

/// Set the IP length fields of the TCP frame `f` (laid out as `t`) for a packet ending at
/// `end`.
fn set_len(f: &mut [u8], t: &Tcp, end: usize) {
    if t.v4 {
        f[t.l3 + 2..t.l3 + 4].copy_from_slice(&((end - t.l3) as u16).to_be_bytes());
    } else {
        f[t.l3 + 4..t.l3 + 6].copy_from_slice(&((end - t.l3 - 40) as u16).to_be_bytes());
    }
}

/// Whether [`segment`] or [`fragment`] can cut `frame` into frames of at most `max_frame`
/// bytes.
pub fn can_cut(frame: &[u8], max_frame: usize) -> bool {
    parse(frame).is_some_and(|t| max_frame > t.data && t.end > t.data)
        || ip_layout(frame).is_some_and(|(l3, v4, end)| {
            end > l3 + if v4 { 20 } else { 40 } && per_fragment(l3, v4, max_frame) >= 8
        })
}

/// The IP packet of `frame` that [`fragment`] can cut: (offset of the IP header, IPv4?, end
/// of the packet). IPv4 without options and not a fragment already; IPv6 without extension
/// headers.
fn ip_layout(f: &[u8]) -> Option<(usize, bool, usize)> {
    if f.len() < 14 {
        return None;
    }
    let (ethertype, l3) = match be16(f, 12) {
        0x8100 if f.len() >= 18 => (be16(f, 16), 18),
        t => (t, 14),
    };
    match ethertype {
        0x0800 => {
            let ip = f.get(l3..l3 + 20)?;
            if ip[0] != 0x45 || be16(ip, 6) & 0x3fff != 0 {
                return None;
            }
            let end = l3 + be16(ip, 2) as usize;
            (end <= f.len() && end >= l3 + 20).then_some((l3, true, end))
        }
        0x86dd => {
            let ip = f.get(l3..l3 + 40)?;
            // Upper-layer payloads only: TCP, UDP, ICMPv6 and the like, no extension header.
            if ip[0] >> 4 != 6 || matches!(ip[6], 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140) {
                return None;
            }
            let end = l3 + 40 + be16(ip, 4) as usize;
            (end <= f.len()).then_some((l3, false, end))
        }
        _ => None,
    }
}

/// Payload bytes per fragment (a multiple of 8) for frames of `max_frame` bytes.
fn per_fragment(l3: usize, v4: bool, max_frame: usize) -> usize {
    let hdr = if v4 { 20 } else { 40 + 8 };
    (max_frame.saturating_sub(l3 + hdr) / 8) * 8
}

/// Cut the IP packet in `frame` (one [`segment`] does not take: UDP, ICMP…), too large for
/// frames of `max_frame` bytes, into IP fragments that fit, as a sending host's network card
/// does for it (UDP fragmentation offload): IPv4 fragments (offsets, MF, DF cleared, the
/// given `id`), or IPv6 fragments with a Fragment header (identification `id`). The
/// checksums of the whole packet are filled first (the first fragment carries the transport
/// header). Each fragment is appended to `out` after `pre`; returns the size of each `pre` +
/// fragment except the last, as [`segment`] does. `None`: not such a packet.
pub fn fragment(
    frame: &[u8],
    max_frame: usize,
    pre: &[u8],
    out: &mut Vec<u8>,
    id: u32,
) -> Option<usize> {
    let (l3, v4, end) = ip_layout(frame)?;
    let per = per_fragment(l3, v4, max_frame);
    let hdr = if v4 { 20 } else { 40 };
    if per < 8 || end <= l3 + hdr {
        return None;
    }
    let mut whole = frame[..end].to_vec();
    csum::fill(&mut whole);
    let payload = &whole[l3 + hdr..];
    let n = payload.len().div_ceil(per);
    for (i, chunk) in payload.chunks(per).enumerate() {
        let more = i + 1 < n;
        let off = i * per;
        let at = out.len() + pre.len();
        out.extend_from_slice(pre);
        out.extend_from_slice(&whole[..l3 + hdr]);
        if v4 {
            out.extend_from_slice(chunk);
            let f = &mut out[at..];
            let ip = &mut f[l3..l3 + 20];
            ip[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&(id as u16).to_be_bytes());
            let fo = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
            ip[6..8].copy_from_slice(&fo.to_be_bytes());
            // Only the header's checksum: the transport one is in the first fragment.
            csum::fill(f);
        } else {
            let next = whole[l3 + 6];
            let fo = ((off / 8) as u16) << 3 | u16::from(more);
            let fo = fo.to_be_bytes();
            let idb = id.to_be_bytes();
            out.extend_from_slice(&[next, 0, fo[0], fo[1], idb[0], idb[1], idb[2], idb[3]]);
            out.extend_from_slice(chunk);
            let f = &mut out[at..];
            f[l3 + 4..l3 + 6].copy_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            f[l3 + 6] = 44;
        }
    }
    Some(pre.len() + l3 + hdr + if v4 { 0 } else { 8 } + per)
}

/// If `frame` is TCP that can be cut into frames of at most `max_frame` bytes, append each
/// segment to `out`, preceded by `pre` (an encapsulation header), and return the size of
/// each `pre` + segment except the last (which may be shorter), the unit of a
/// segmentation-offload send. `None`: not such TCP, or not even its headers fit.
pub fn segment(frame: &[u8], max_frame: usize, pre: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let (mut hdrs, mut parts) = (Vec::new(), Vec::new());
    let unit = segment_parts(frame, max_frame, pre, &mut hdrs, &mut parts)?;
    for (h, p) in parts {
        out.extend_from_slice(&hdrs[h]);
        out.extend_from_slice(&frame[p]);
    }
    Some(unit)
}

/// [`segment`] without copying the payload (what [`segment`] is made of): for each segment,
/// `pre` and the segment's headers (checksums computed over the headers and the payload where
/// it lies) are appended to `hdrs`, and `parts` gets (range in `hdrs`, range in `frame`) of
/// the headers and the payload, to send as a gather list (header, payload, header,
/// payload…). Returns the size of each `pre` + segment but the last, or `None` as [`segment`]
/// does.
pub fn segment_parts(
    frame: &[u8],
    max_frame: usize,
    pre: &[u8],
    hdrs: &mut Vec<u8>,
    parts: &mut Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
) -> Option<usize> {
    let t = parse(frame)?;
    let mss = max_frame.checked_sub(t.data).filter(|m| *m > 0)?;
    if t.end == t.data {
        return None;
    }
    let seq = be32(frame, t.l4 + 4);
    let flags = frame[t.l4 + 13];
    let id = if t.v4 { be16(frame, t.l3 + 4) } else { 0 };
    let n = (t.end - t.data).div_ceil(mss);
    // The pseudo-header's addresses and protocol; the length is added per segment.
    let addrs = if t.v4 {
        &frame[t.l3 + 12..t.l3 + 20]
    } else {
        &frame[t.l3 + 8..t.l3 + 40]
    };
    let pseudo = csum::sum(addrs, u64::from(TCP));
    for i in 0..n {
        let (a, b) = (t.data + i * mss, (t.data + (i + 1) * mss).min(t.end));
        let start = hdrs.len();
        hdrs.extend_from_slice(pre);
        let h0 = hdrs.len();
        hdrs.extend_from_slice(&frame[..t.data]);
        let h = &mut hdrs[h0..];
        let end = t.data + (b - a);
        set_len(h, &t, end);
        if t.v4 {
            h[t.l3 + 4..t.l3 + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
            h[t.l3 + 10..t.l3 + 12].copy_from_slice(&[0, 0]);
            let c = csum::finish(csum::sum(&h[t.l3..t.l3 + 20], 0));
            h[t.l3 + 10..t.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let off = (i * mss) as u32;
        h[t.l4 + 4..t.l4 + 8].copy_from_slice(&seq.wrapping_add(off).to_be_bytes());
        let mut fl = flags;
        if i + 1 < n {
            fl &= !(FIN | PSH);
        }
        if i > 0 {
            fl &= !CWR;
        }
        h[t.l4 + 13] = fl;
        h[t.l4 + 16..t.l4 + 18].copy_from_slice(&[0, 0]);
        // The TCP header is a whole number of 32-bit words: its sum and the payload's add.
        let tcp_len = (end - t.l4) as u64;
        let c = csum::finish(csum::sum(
            &frame[a..b],
            csum::sum(&h[t.l4..t.data], pseudo + tcp_len),
        ));
        h[t.l4 + 16..t.l4 + 18].copy_from_slice(&c.to_be_bytes());
        parts.push((start..hdrs.len(), a..b));
    }
    Some(pre.len() + t.data + mss)
}

/// Builds one frame out of consecutive segments of one TCP connection (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct Coalescer {
    frame: Vec<u8>,
    /// Layout of `frame`, while it holds a segment that may grow.
    tcp: Option<Tcp>,
    /// Segments in `frame`.
    pub count: usize,
}

impl Coalescer {
    /// Whether a frame is waiting (call [`Coalescer::take`] before anything else goes out).
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// Take `f` into the frame being built: appended if it continues it and the result stays
    /// within `room` bytes, or as the start of a new one (then `false`: take the old one
    /// out first, which the caller does before calling again). Returns `true` if `f` was
    /// taken.
    pub fn offer(&mut self, f: &[u8], room: usize) -> bool {
        let Some(t) = parse(f) else {
            return false;
        };
        let flags = f[t.l4 + 13];
        // Data with ACK (and maybe PSH) only: what bulk transfers are made of.
        if flags & (FIN | SYN | RST | URG | CWR) != 0 || flags & ACK == 0 || t.data == t.end {
            return false;
        }
        if self.frame.is_empty() {
            if flags & PSH != 0 || t.end > room {
                return false;
            }
            self.frame.extend_from_slice(&f[..t.end]);
            self.tcp = Some(t);
            self.count = 1;
            return true;
        }
        let Some(p) = self.tcp else {
            return false;
        };
        let g = &self.frame;
        let plen = p.end - p.data;
        let same_headers = p.l3 == t.l3
            && p.v4 == t.v4
            && p.data == t.data
            && g[..p.l3] == f[..t.l3]
            && if t.v4 {
                // Version..TOS, flags/fragment, TTL, protocol, addresses.
                g[p.l3..p.l3 + 2] == f[t.l3..t.l3 + 2]
                    && g[p.l3 + 6..p.l3 + 10] == f[t.l3 + 6..t.l3 + 10]
                    && g[p.l3 + 12..p.l3 + 20] == f[t.l3 + 12..t.l3 + 20]
            } else {
                g[p.l3..p.l3 + 4] == f[t.l3..t.l3 + 4] && g[p.l3 + 6..p.l3 + 40] == f[t.l3 + 6..t.l3 + 40]
            }
            // Ports; acknowledgement number; options.
            && g[p.l4..p.l4 + 4] == f[t.l4..t.l4 + 4]
            && g[p.l4 + 8..p.l4 + 12] == f[t.l4 + 8..t.l4 + 12]
            && g[p.l4 + 20..p.data] == f[t.l4 + 20..t.data];
        let next = be32(g, p.l4 + 4).wrapping_add(plen as u32);
        let more = t.end - t.data;
        if !same_headers || be32(f, t.l4 + 4) != next || p.end + more > room {
            return false;
        }
        self.frame.extend_from_slice(&f[t.data..t.end]);
        let end = p.end + more;
        let g = &mut self.frame;
        set_len(g, &p, end);
        // The latest window; PSH ends the frame.
        g[p.l4 + 14..p.l4 + 16].copy_from_slice(&f[t.l4 + 14..t.l4 + 16]);
        g[p.l4 + 13] |= flags & PSH;
        self.count += 1;
        self.tcp = (flags & PSH == 0).then_some(Tcp { end, ..p });
        true
    }

    /// The frame built and how many segments it holds; the coalescer is empty after. `buf`
    /// is given the frame's storage. The checksums of a joined frame are not redone: the
    /// caller treats the frame as one without them (the switch fills them in only where a
    /// port or a capture needs them).
    pub fn take(&mut self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        std::mem::swap(buf, &mut self.frame);
        self.tcp = None;
        std::mem::take(&mut self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP frame (IPv4 or IPv6) with `payload`, sequence `seq`, flags `flags`, checksums
    /// filled.
    fn tcp_frame(v4: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if v4 {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, TCP, 0, 0];
            ip.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            let total = (20 + 32 + payload.len()) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&ip);
        } else {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0x60, 0, 0, 0, 0, 0, TCP, 64];
            ip[4..6].copy_from_slice(&((32 + payload.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            ip.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ip);
        }
        let mut tcp = vec![0u8; 32];
        tcp[0..2].copy_from_slice(&4000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&77u32.to_be_bytes());
        tcp[12] = 8 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&1000u16.to_be_bytes());
        // Options: NOP NOP timestamps.
        tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        csum::fill(&mut f);
        f
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn segments_fit_carry_the_bytes_in_order_and_rejoin_to_the_original() {
        for v4 in [true, false] {
            let data = payload(10_000);
            let big = tcp_frame(v4, 1_000_000, ACK | PSH | FIN, &data);
            let pre = [9u8; 8];
            let mut out = Vec::new();
            let unit = segment(&big, 1464, &pre, &mut out).unwrap();
            let hdrs = if v4 { 14 + 20 + 32 } else { 14 + 40 + 32 };
            assert_eq!(unit, 8 + 1464);
            let mss = 1464 - hdrs;
            let n = data.len().div_ceil(mss);
            assert_eq!(out.len(), n * 8 + n * hdrs + data.len());
            let mut co = Coalescer::default();
            let mut got = Vec::new();
            for (i, d) in out.chunks(unit).enumerate() {
                assert_eq!(&d[..8], &pre);
                let s = &d[8..];
                assert!(s.len() <= 1464);
                // Each segment's checksums are right: filling again changes nothing.
                let mut again = s.to_vec();
                csum::fill(&mut again);
                assert_eq!(again, s);
                let expect = tcp_frame(
                    v4,
                    1_000_000 + (i * mss) as u32,
                    if i + 1 == n { ACK | PSH | FIN } else { ACK },
                    &data[i * mss..((i + 1) * mss).min(data.len())],
                );
                if v4 {
                    // Ids count up from the original's.
                    assert_eq!(be16(s, 18), 0x1234 + i as u16);
                    let mut e = expect.clone();
                    e[18..20].copy_from_slice(&(0x1234 + i as u16).to_be_bytes());
                    csum::fill(&mut e);
                    assert_eq!(s, &e[..], "segment {i}");
                } else {
                    assert_eq!(s, &expect[..], "segment {i}");
                }
                if !co.offer(s, 65535) {
                    assert!(
                        !co.is_empty(),
                        "a FIN segment is not joined: it ends the frame"
                    );
                    let mut b = Vec::new();
                    co.take(&mut b);
                    got.push(b);
                    got.push(s.to_vec());
                }
            }
            // All but the FIN segment join into one frame equal to the original without FIN
            // (once its checksums are filled in).
            assert_eq!(got.len(), 2);
            csum::fill(&mut got[0]);
            let joined = &got[0];
            let first_n = n - 1;
            let expect = tcp_frame(v4, 1_000_000, ACK, &data[..first_n * mss]);
            if v4 {
                assert_eq!(
                    joined[14 + 2..14 + 4],
                    expect[14 + 2..14 + 4],
                    "total length"
                );
                assert_eq!(joined[34..], expect[34..]);
            } else {
                assert_eq!(joined, &expect);
            }
        }
    }

    /// A UDP frame (IPv4 or IPv6) carrying `payload`, checksums left zero as a node sends.
    fn udp_frame(v4: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = tcp_frame(v4, 0, ACK, &[]);
        let l3 = 14;
        let l4 = if v4 { l3 + 20 } else { l3 + 40 };
        f.truncate(l4);
        if v4 {
            f[l3 + 9] = 17;
            f[l3 + 6] = 0x40; // DF, as smoltcp sends
            f[l3 + 2..l3 + 4].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
            f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        } else {
            f[l3 + 6] = 17;
            f[l3 + 4..l3 + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        }
        let mut udp = vec![0u8; 8];
        udp[0..2].copy_from_slice(&5353u16.to_be_bytes());
        udp[2..4].copy_from_slice(&9999u16.to_be_bytes());
        udp[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&udp);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn large_datagrams_become_fragments_that_reassemble_to_the_checksummed_original() {
        for v4 in [true, false] {
            let data = payload(8000);
            let f = udp_frame(v4, &data);
            let mut whole = f.clone();
            csum::fill(&mut whole);
            assert!(can_cut(&f, 1464));
            let pre = [7u8; 8];
            let mut out = Vec::new();
            let unit = fragment(&f, 1464, &pre, &mut out, 0x1234_5678).unwrap();
            let l3 = 14;
            let hdr = if v4 { 20 } else { 48 };
            let mut body = vec![0u8; 0];
            let mut pieces = 0;
            for d in out.chunks(unit) {
                assert_eq!(&d[..8], &pre);
                let g = &d[8..];
                assert!(g.len() <= 1464);
                assert_eq!(g[..l3], whole[..l3]);
                let (off, more) = if v4 {
                    assert_eq!(be16(g, l3 + 4), 0x5678, "the id");
                    let fo = be16(g, l3 + 6);
                    assert_eq!(fo & 0x4000, 0, "DF cleared");
                    let mut again = g.to_vec();
                    csum::fill(&mut again);
                    assert_eq!(again, g, "header checksum right");
                    (((fo & 0x1fff) as usize) * 8, fo & 0x2000 != 0)
                } else {
                    assert_eq!(g[l3 + 6], 44, "a fragment header follows");
                    assert_eq!(g[l3 + 40], 17, "then UDP");
                    assert_eq!(be32(g, l3 + 44), 0x1234_5678);
                    let fo = be16(g, l3 + 42);
                    (((fo >> 3) as usize) * 8, fo & 1 != 0)
                };
                assert_eq!(off, body.len(), "in order, no gap");
                body.extend_from_slice(&g[l3 + hdr..]);
                pieces += 1;
                assert_eq!(
                    more,
                    body.len() < whole.len() - l3 - if v4 { 20 } else { 40 }
                );
            }
            assert!(pieces >= 6);
            // Reassembled: the original datagram with its checksum filled in.
            let l4 = l3 + if v4 { 20 } else { 40 };
            assert_eq!(body, whole[l4..], "v4 {v4}");
        }
        // Already a fragment, or IPv4 with options: left alone.
        let mut frag = udp_frame(true, &payload(3000));
        frag[14 + 6] = 0x20;
        assert!(fragment(&frag, 1464, &[], &mut Vec::new(), 1).is_none());
        let mut opts = udp_frame(true, &payload(3000));
        opts[14] = 0x46;
        assert!(fragment(&opts, 1464, &[], &mut Vec::new(), 1).is_none());
    }

    #[test]
    fn segments_of_any_length_fit_are_checksummed_and_carry_the_payload_in_order() {
        for v4 in [true, false] {
            for len in [1, 1000, 1410, 1411, 10_000, 65_000] {
                let data = payload(len);
                let big = tcp_frame(v4, 7, ACK | PSH | FIN | CWR, &data);
                let pre = [3u8; 8];
                let mut out = Vec::new();
                let unit = segment(&big, 1464, &pre, &mut out).unwrap();
                let l4 = if v4 { 14 + 20 } else { 14 + 40 };
                let (mut body, mut n) = (Vec::new(), 0);
                let count = out.chunks(unit).count();
                for d in out.chunks(unit) {
                    assert_eq!(&d[..8], &pre);
                    let s = &d[8..];
                    assert!(s.len() <= 1464, "v4 {v4} len {len}");
                    let mut again = s.to_vec();
                    csum::fill(&mut again);
                    assert_eq!(again, s, "checksums right, v4 {v4} len {len} #{n}");
                    assert_eq!(be32(s, l4 + 4), 7 + body.len() as u32, "sequence");
                    let last = n + 1 == count;
                    let want =
                        if last { ACK | PSH | FIN } else { ACK } | if n == 0 { CWR } else { 0 };
                    assert_eq!(s[l4 + 13], want, "flags of #{n}");
                    body.extend_from_slice(&s[l4 + 32..]);
                    n += 1;
                }
                assert_eq!(body, data, "v4 {v4} len {len}");
            }
        }
    }

    #[test]
    fn what_is_not_plain_tcp_data_is_neither_cut_nor_joined() {
        let mut out = Vec::new();
        // Not TCP (UDP), fragments, and a frame whose headers alone exceed the size.
        let mut udp = tcp_frame(true, 1, ACK, &payload(3000));
        udp[23] = 17;
        assert_eq!(segment(&udp, 1464, &[], &mut out), None);
        for n in 0..udp.len() {
            let _ = fragment(&udp[..n], 100, &[], &mut Vec::new(), 1);
        }
        let mut frag = tcp_frame(true, 1, ACK, &payload(3000));
        frag[20] = 0x20;
        assert_eq!(segment(&frag, 1464, &[], &mut out), None);
        assert_eq!(
            segment(&tcp_frame(false, 1, ACK, &payload(3000)), 80, &[], &mut out),
            None
        );
        assert!(out.is_empty());
        // Truncated frames never panic.
        let f = tcp_frame(true, 1, ACK, &payload(100));
        for n in 0..f.len() {
            let _ = segment(&f[..n], 60, &[], &mut out);
            let _ = Coalescer::default().offer(&f[..n], 65535);
        }
        let mut co = Coalescer::default();
        // SYN, RST, pure ACK: never joined.
        for fl in [SYN | ACK, RST | ACK] {
            assert!(!co.offer(&tcp_frame(true, 1, fl, &payload(10)), 65535));
        }
        assert!(!co.offer(&tcp_frame(true, 1, ACK, &[]), 65535));
        // A gap in the sequence, another port, a frame past the room: not joined.
        assert!(co.offer(&tcp_frame(true, 100, ACK, &payload(100)), 65535));
        assert!(!co.offer(&tcp_frame(true, 201, ACK, &payload(100)), 65535));
        let mut other = tcp_frame(true, 200, ACK, &payload(100));
        other[34] = 9;
        csum::fill(&mut other);
        assert!(!co.offer(&other, 65535));
        assert!(!co.offer(&tcp_frame(true, 200, ACK, &payload(100)), 250));
        assert!(co.offer(&tcp_frame(true, 200, ACK, &payload(100)), 65535));
        let mut b = Vec::new();
        assert_eq!(co.take(&mut b), 2);
        assert!(co.is_empty());
    }
}
