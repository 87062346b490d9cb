//! rtpengine ng control protocol client.
