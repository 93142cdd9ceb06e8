// Automatically generated mod.rs
pub mod webrtc;
