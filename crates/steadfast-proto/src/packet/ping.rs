//! PINGREQ and PINGRESP (sections 3.12, 3.13): a fixed header only.

/// PINGREQ marker (the packet has no body; see [`super::Packet::PingReq`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingReq;

/// PINGRESP marker (the packet has no body; see [`super::Packet::PingResp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResp;
