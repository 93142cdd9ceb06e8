mod proto {
    #![allow(unreachable_pub)]
    include!("generated/mod.rs");
    pub use self::webrtc::pb::{mod_Message::Flag, Message};
}

mod fingerprint;
pub mod noise;
pub mod sdp;
mod stream;
mod transport;

pub use fingerprint::{Fingerprint, SHA256};
pub use stream::{DropListener, Stream, MAX_MSG_LEN};
pub use transport::parse_webrtc_dial_addr;
