//! Pure mapping from SIP facts and computed flags to ng requests.
//!
//! # The tag rule
//!
//! rtpengine names each party of a call by a tag: in `offer` and `answer`, `from-tag` is
//! the party that **made the offer** and `to-tag` the party that **answers** it. In SIP that
//! is, for the message being handled:
//!
//! | SDP is ... | carried in a ... | ng `from-tag` | ng `to-tag` |
//! |---|---|---|---|
//! | an offer  | request (INVITE, re-INVITE, UPDATE) | its From tag | its To tag (if in-dialog) |
//! | an answer | response (18x, 2xx)                 | its From tag | its To tag |
//! | an offer  | response (late offer: 2xx to an INVITE without SDP) | its To tag | its From tag |
//! | an answer | request (ACK or PRACK answering a late offer)       | its To tag | its From tag |
//!
//! The first two rows are "use the tags of the message as they are"; they make
//! re-INVITEs from either side correct without special cases: a re-INVITE from the callee
//! has the callee's tag in From, so the callee becomes the offerer of that exchange. The
//! last two rows are the same rule seen from the offerer (Kamailio's rtpengine module does
//! the same swap).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ngclient::{CallRef, CodecOptions, MediaRequest, SdpAttrOps};
use rtcgate_sdp::{NgMediaFlags, SdpKind};

use super::error::MediaError;

/// Which kind of SIP message carries the SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Carrier {
    /// A request (INVITE, UPDATE, ACK, PRACK).
    Request,
    /// A response (18x, 2xx).
    Response,
}

/// The tags of one ng offer or answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NgTags {
    /// ng `from-tag`: the offerer.
    pub from_tag: String,
    /// ng `to-tag`: the answerer, when known.
    pub to_tag: Option<String>,
}

/// Applies the tag rule (module docs) to a message's own From and To tags.
///
/// Fails when a tag the rule needs is missing (an answer without To tag, a late offer in a
/// response without To tag).
pub fn ng_tags(
    carrier: Carrier,
    kind: SdpKind,
    msg_from_tag: &str,
    msg_to_tag: Option<&str>,
) -> Result<NgTags, MediaError> {
    let to = msg_to_tag.filter(|t| !t.is_empty());
    let offerer_is_from = matches!(
        (carrier, kind),
        (Carrier::Request, SdpKind::Offer) | (Carrier::Response, SdpKind::Answer)
    );
    if offerer_is_from {
        if kind == SdpKind::Answer && to.is_none() {
            return Err(MediaError::Unexpected("answer without To tag".into()));
        }
        Ok(NgTags {
            from_tag: msg_from_tag.to_owned(),
            to_tag: to.map(str::to_owned),
        })
    } else {
        let Some(to) = to else {
            return Err(MediaError::Unexpected(
                "SDP from the callee without To tag".into(),
            ));
        };
        Ok(NgTags {
            from_tag: to.to_owned(),
            to_tag: Some(msg_from_tag.to_owned()),
        })
    }
}

/// Builds the ng `offer`/`answer` request from the computed flags and the call's identity.
pub fn media_request(
    flags: &NgMediaFlags,
    call_id: &str,
    tags: &NgTags,
    via_branch: Option<&str>,
    sdp: &[u8],
    received_from: Option<IpAddr>,
) -> MediaRequest {
    let mut req = MediaRequest::new(sdp, call_id, tags.from_tag.as_str());
    req.to_tag = tags.to_tag.clone();
    req.via_branch = via_branch.map(str::to_owned);
    req.transport_protocol = flags.transport_protocol.clone();
    req.ice = flags.ice.clone();
    req.dtls = flags.dtls.clone();
    req.dtls_reverse = flags.dtls_reverse.clone();
    req.sdes = flags.sdes.clone();
    req.rtcp_mux = flags.rtcp_mux.clone();
    req.flags = flags.flags.clone();
    req.replace = flags.replace.clone();
    let c = &flags.codec;
    req.codec = CodecOptions {
        strip: c.strip.clone(),
        mask: c.mask.clone(),
        transcode: c.transcode.clone(),
        offer: c.offer.clone(),
        except: c.except.clone(),
        accept: c.accept.clone(),
        consume: Vec::new(),
    };
    if let Some(attr) = &flags.sdp_attr {
        let mut map = BTreeMap::new();
        for (section, remove) in [
            ("global", &attr.global_remove),
            ("audio", &attr.audio_remove),
            ("video", &attr.video_remove),
        ] {
            if !remove.is_empty() {
                map.insert(
                    section.to_owned(),
                    SdpAttrOps {
                        remove: remove.clone(),
                        ..SdpAttrOps::default()
                    },
                );
            }
        }
        req.sdp_attr = map;
    }
    if !flags.sdp_media_remove.is_empty() {
        req.extra.insert(
            "sdp-media-remove".to_owned(),
            ngclient::request::str_list(&flags.sdp_media_remove),
        );
    }
    if let Some(ip) = received_from {
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        req.received_from = vec![family.to_owned(), ip.to_string()];
    }
    req
}

/// A `delete` of a whole call: call-id only, so every party and fork leftover goes.
pub fn delete_call(call_id: &str) -> CallRef {
    CallRef::new(call_id)
}

/// A `delete` of one failed fork branch of a call whose other branches live on.
pub fn delete_branch(call_id: &str, caller_tag: &str, via_branch: &str) -> CallRef {
    let mut r = CallRef::new(call_id).from_tag(caller_tag);
    r.via_branch = Some(via_branch.to_owned());
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcgate_sdp::{CodecFlags, SdpAttrFlags};

    #[test]
    fn tags_follow_the_offerer() {
        let t = |c, k, f, to| ng_tags(c, k, f, to).map(|t| (t.from_tag, t.to_tag));
        let s = |x: &str| x.to_owned();
        // Initial INVITE from A.
        assert_eq!(
            t(Carrier::Request, SdpKind::Offer, "A", None),
            Ok((s("A"), None))
        );
        // 200 from B.
        assert_eq!(
            t(Carrier::Response, SdpKind::Answer, "A", Some("B")),
            Ok((s("A"), Some(s("B"))))
        );
        // re-INVITE from B (callee): From=B, To=A; its 200: From=B, To=A.
        assert_eq!(
            t(Carrier::Request, SdpKind::Offer, "B", Some("A")),
            Ok((s("B"), Some(s("A"))))
        );
        assert_eq!(
            t(Carrier::Response, SdpKind::Answer, "B", Some("A")),
            Ok((s("B"), Some(s("A"))))
        );
        // Late offer: 200 (From=A, To=B) carries B's offer; the ACK (From=A, To=B) A's answer.
        assert_eq!(
            t(Carrier::Response, SdpKind::Offer, "A", Some("B")),
            Ok((s("B"), Some(s("A"))))
        );
        assert_eq!(
            t(Carrier::Request, SdpKind::Answer, "A", Some("B")),
            Ok((s("B"), Some(s("A"))))
        );
        assert!(t(Carrier::Response, SdpKind::Answer, "A", None).is_err());
        assert!(t(Carrier::Response, SdpKind::Answer, "A", Some("")).is_err());
        assert!(t(Carrier::Response, SdpKind::Offer, "A", None).is_err());
    }

    #[test]
    fn flags_are_copied_key_by_key() {
        let flags = NgMediaFlags {
            transport_protocol: Some("RTP/AVP".into()),
            ice: Some("remove".into()),
            dtls: Some("off".into()),
            dtls_reverse: Some("passive".into()),
            sdes: vec!["off".into()],
            rtcp_mux: vec!["demux".into()],
            flags: vec!["strip-extmap".into()],
            replace: vec!["origin".into()],
            codec: CodecFlags {
                strip: vec!["all".into()],
                offer: vec!["PCMA".into()],
                ..CodecFlags::default()
            },
            sdp_attr: Some(SdpAttrFlags {
                global_remove: vec!["msid-semantic".into()],
                ..SdpAttrFlags::default()
            }),
            sdp_media_remove: vec!["video".into()],
        };
        let tags = NgTags {
            from_tag: "A".into(),
            to_tag: Some("B".into()),
        };
        let r = media_request(
            &flags,
            "c1",
            &tags,
            Some("z9hG4bK1"),
            b"v=0\r\n",
            Some("192.0.2.1".parse().unwrap()),
        );
        let d = r.answer();
        let get = |k: &str| d.get_str(k).map(str::to_owned);
        assert_eq!(get("call-id").as_deref(), Some("c1"));
        assert_eq!(get("from-tag").as_deref(), Some("A"));
        assert_eq!(get("to-tag").as_deref(), Some("B"));
        assert_eq!(get("via-branch").as_deref(), Some("z9hG4bK1"));
        assert_eq!(get("ICE").as_deref(), Some("remove"));
        assert_eq!(get("DTLS-reverse").as_deref(), Some("passive"));
        assert_eq!(get("transport-protocol").as_deref(), Some("RTP/AVP"));
        assert_eq!(r.codec.offer, vec!["PCMA".to_owned()]);
        assert!(r.sdp_attr.contains_key("global"));
        assert!(!r.sdp_attr.contains_key("audio"));
        assert!(d.dict().contains_key(&b"sdp-media-remove"[..]));
        assert_eq!(
            r.received_from,
            vec!["IP4".to_owned(), "192.0.2.1".to_owned()]
        );
    }
}
