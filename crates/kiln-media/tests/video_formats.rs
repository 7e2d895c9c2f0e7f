//! Encodes real clips in every format and reads them back with ffprobe/ffmpeg (Debian's
//! `ffmpeg` package): codec, frame count, frame rate, exact duration, size, colour tags,
//! layout, decoded fidelity, quality monotonicity, odd sizes and bad input.

mod video_support;

use kiln_media::video_out::{
    clip_frame, encode_poster_jpeg, encode_video, write_video_file, EncodeOptions, VideoError,
    VideoFormat,
};
use video_support::*;

fn options(format: VideoFormat, fps: u32, quality: u8) -> EncodeOptions {
    EncodeOptions {
        format,
        fps,
        quality,
    }
}

/// 121 frames at 24 fps must probe as exactly 121 frames, 24 fps and 5.041667 s, with the
/// right codec, size, pixel format and BT.709 limited-range colour tags.
fn check_121_frames_at_24_fps(format: VideoFormat) {
    let (width, height) = (64, 48);
    let frames = synthetic_clip(121, width, height);
    let dir = scratch_dir(&format!("probe_{format}"));
    let path = dir.join(format!("clip.{}", format.extension()));
    let size = write_video_file(&path, &frames, 121, width, height, &options(format, 24, 95))
        .expect("encode");
    assert_eq!(size, std::fs::metadata(&path).unwrap().len());

    let probe = ffprobe(&path);
    assert_eq!(probe.str("codec_name"), format.codec_name());
    assert_eq!(probe.int("width"), width as i64);
    assert_eq!(probe.int("height"), height as i64);
    assert_eq!(probe.str("pix_fmt"), "yuv420p");
    assert_eq!(probe.int("nb_read_frames"), 121, "decoded frame count");
    assert_eq!(probe.str("r_frame_rate"), "24/1");
    assert_eq!(probe.str("color_space"), "bt709");
    assert_eq!(probe.str("color_primaries"), "bt709");
    assert_eq!(probe.str("color_transfer"), "bt709");
    assert_eq!(probe.str("color_range"), "tv");
    let exact = 121.0 / 24.0;
    assert!(
        (probe.format_duration() - exact).abs() < 0.0005,
        "format duration {} != {exact}",
        probe.format_duration()
    );
    let name = probe.format["format_name"].as_str().unwrap().to_string();
    match format {
        VideoFormat::Mp4 | VideoFormat::Mov => {
            // The sample table itself: 121 samples, 24 fps, the stream lasting 121/24 s.
            assert_eq!(probe.int("nb_frames"), 121);
            assert_eq!(probe.str("avg_frame_rate"), "24/1");
            assert!((probe.stream_duration() - exact).abs() < 0.0005);
            assert!(name.contains("mp4") && name.contains("mov"), "{name}");
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                top_level_boxes(&bytes),
                ["ftyp", "moov", "mdat"],
                "faststart layout"
            );
            let brand = &bytes[8..12];
            let expected: &[u8] = if format == VideoFormat::Mp4 {
                b"isom"
            } else {
                b"qt  "
            };
            assert_eq!(brand, expected, "major brand");
            let tags = probe.format["tags"]["major_brand"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert_eq!(tags.as_bytes(), expected);
        }
        VideoFormat::Webm => {
            assert_eq!(name, "matroska,webm");
            assert_eq!(probe.str("avg_frame_rate"), "24/1");
        }
    }
}

#[test]
fn mp4_has_exact_frames_duration_and_tags() {
    check_121_frames_at_24_fps(VideoFormat::Mp4);
}

#[test]
fn mov_has_exact_frames_duration_and_tags() {
    check_121_frames_at_24_fps(VideoFormat::Mov);
}

#[test]
fn webm_has_exact_frames_duration_and_tags() {
    check_121_frames_at_24_fps(VideoFormat::Webm);
}

/// Decodes the file back to RGB with ffmpeg (which follows the file's colour tags) and
/// compares it with the input frames.
fn decoded_psnr(format: VideoFormat, quality: u8) -> f64 {
    let (width, height, count) = (96, 64, 24);
    let frames = synthetic_clip(count, width, height);
    let dir = scratch_dir(&format!("psnr_{format}_{quality}"));
    let path = dir.join(format!("clip.{}", format.extension()));
    write_video_file(
        &path,
        &frames,
        count,
        width,
        height,
        &options(format, 24, quality),
    )
    .expect("encode");
    psnr(&frames, &decode_rgb(&path))
}

#[test]
fn mp4_decodes_back_above_35_db_at_quality_95() {
    let db = decoded_psnr(VideoFormat::Mp4, 95);
    eprintln!("mp4 quality 95: {db:.2} dB");
    assert!(db >= 35.0, "PSNR {db:.2} dB < 35 dB");
}

#[test]
fn mov_and_webm_decode_back_above_35_db_at_quality_95() {
    for format in [VideoFormat::Mov, VideoFormat::Webm] {
        let db = decoded_psnr(format, 95);
        eprintln!("{format} quality 95: {db:.2} dB");
        assert!(db >= 35.0, "{format}: PSNR {db:.2} dB < 35 dB");
    }
}

#[test]
fn colours_survive_the_round_trip() {
    // Flat primaries show a wrong matrix or range at once (e.g. BT.601 vs BT.709 shifts
    // pure green by ~20 levels), which an averaged PSNR could hide.
    let (width, height, count) = (32, 32, 2);
    let colours: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 150, 50]];
    for format in VideoFormat::ALL {
        for colour in colours {
            let frames: Vec<u8> = colour
                .iter()
                .copied()
                .cycle()
                .take(count * width * height * 3)
                .collect();
            let dir = scratch_dir(&format!("colour_{format}"));
            let path = dir.join(format!("flat.{}", format.extension()));
            write_video_file(
                &path,
                &frames,
                count,
                width,
                height,
                &options(format, 24, 95),
            )
            .unwrap();
            let decoded = decode_rgb(&path);
            let centre = (16 * width + 16) * 3;
            for channel in 0..3 {
                let got = i32::from(decoded[centre + channel]);
                let want = i32::from(colour[channel]);
                assert!(
                    (got - want).abs() <= 4,
                    "{format} {colour:?}: decoded {:?}",
                    &decoded[centre..centre + 3]
                );
            }
        }
    }
}

#[test]
fn higher_quality_never_gives_a_smaller_file() {
    let (width, height, count) = (64, 48, 12);
    let frames = synthetic_clip(count, width, height);
    let qualities = [20, 30, 40, 50, 60, 70, 80, 90, 95, 99];
    for format in VideoFormat::ALL {
        let sizes: Vec<usize> = qualities
            .iter()
            .map(|&q| {
                encode_video(&frames, count, width, height, &options(format, 24, q))
                    .unwrap()
                    .len()
            })
            .collect();
        eprintln!("{format}: {qualities:?} -> {sizes:?} bytes");
        for pair in sizes.windows(2) {
            assert!(
                pair[1] >= pair[0],
                "{format}: sizes {sizes:?} for qualities {qualities:?}"
            );
        }
        assert!(
            sizes[qualities.len() - 1] > sizes[0],
            "{format}: quality changes nothing"
        );
    }
}

#[test]
fn odd_sizes_are_padded_to_even() {
    let (width, height, count) = (33, 17, 5);
    let frames = synthetic_clip(count, width, height);
    for format in VideoFormat::ALL {
        let dir = scratch_dir(&format!("odd_{format}"));
        let path = dir.join(format!("odd.{}", format.extension()));
        write_video_file(
            &path,
            &frames,
            count,
            width,
            height,
            &options(format, 16, 95),
        )
        .unwrap();
        let probe = ffprobe(&path);
        assert_eq!(
            (probe.int("width"), probe.int("height")),
            (34, 18),
            "{format}"
        );
        assert_eq!(probe.int("nb_read_frames"), count as i64, "{format}");
        // The padding repeats the edge: the decoded extra column matches the last one.
        let decoded = decode_rgb(&path);
        let row = 5;
        let at = |x: usize| (row * 34 + x) * 3;
        for channel in 0..3 {
            let last = i32::from(decoded[at(32) + channel]);
            let pad = i32::from(decoded[at(33) + channel]);
            assert!(
                (last - pad).abs() <= 6,
                "{format}: pad {pad} vs edge {last}"
            );
        }
    }
    // Tiny clips work too: padded up to the encoders' 16-pixel minimum.
    for (w, h) in [(1, 1), (2, 2), (7, 3)] {
        for format in VideoFormat::ALL {
            let frames = synthetic_clip(2, w, h);
            let dir = scratch_dir(&format!("tiny_{format}"));
            let path = dir.join(format!("tiny.{}", format.extension()));
            write_video_file(&path, &frames, 2, w, h, &options(format, 24, 95))
                .unwrap_or_else(|err| panic!("{format} {w}x{h}: {err}"));
            let probe = ffprobe(&path);
            assert_eq!(
                (probe.int("width"), probe.int("height")),
                (16, 16),
                "{format} {w}x{h}"
            );
            assert_eq!(probe.int("nb_read_frames"), 2, "{format} {w}x{h}");
        }
    }
}

#[test]
fn one_frame_clip_keeps_its_duration() {
    let frames = synthetic_clip(1, 32, 32);
    for format in VideoFormat::ALL {
        let dir = scratch_dir(&format!("single_{format}"));
        let path = dir.join(format!("one.{}", format.extension()));
        write_video_file(&path, &frames, 1, 32, 32, &options(format, 16, 95)).unwrap();
        let probe = ffprobe(&path);
        assert_eq!(probe.int("nb_read_frames"), 1, "{format}");
        assert!(
            (probe.format_duration() - 1.0 / 16.0).abs() < 0.0005,
            "{format}: {}",
            probe.format_duration()
        );
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let frames = synthetic_clip(2, 8, 8);
    let mp4 = options(VideoFormat::Mp4, 24, 95);
    let err = encode_video(&frames, 3, 8, 8, &mp4).unwrap_err();
    assert!(
        matches!(
            err,
            VideoError::BufferSize {
                expected: 576,
                actual: 384,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("frames*height*width*3"), "{err}");
    assert!(matches!(
        encode_video(&[], 0, 8, 8, &mp4),
        Err(VideoError::NoFrames)
    ));
    assert!(matches!(
        encode_video(&[], 1, 0, 8, &mp4),
        Err(VideoError::BadSize { .. })
    ));
    assert!(matches!(
        encode_video(&[], 1, 9000, 8, &mp4),
        Err(VideoError::BadSize { .. })
    ));
    // Larger than H.264 level 5.2 allows: a clear error before any encoding.
    let err = encode_video(&[], 1, 4112, 2304, &mp4).unwrap_err();
    assert!(matches!(err, VideoError::BufferSize { .. }), "{err}");
    let big = vec![0u8; 4112 * 2304 * 3];
    let err = encode_video(&big, 1, 4112, 2304, &mp4).unwrap_err();
    assert!(matches!(err, VideoError::TooLargeForH264 { .. }), "{err}");
    assert!(err.to_string().contains("use webm"), "{err}");
    for quality in [0, 19, 100, 255] {
        let err =
            encode_video(&frames, 2, 8, 8, &options(VideoFormat::Webm, 24, quality)).unwrap_err();
        assert!(
            matches!(err, VideoError::QualityOutOfRange(q) if q == quality),
            "{err}"
        );
    }
    for fps in [0, 241] {
        let err = encode_video(&frames, 2, 8, 8, &options(VideoFormat::Mov, fps, 95)).unwrap_err();
        assert!(matches!(err, VideoError::FpsOutOfRange(_)), "{err}");
    }
    let err = write_video_file(
        std::path::Path::new("/nonexistent-dir/clip.mp4"),
        &frames,
        2,
        8,
        8,
        &mp4,
    )
    .unwrap_err();
    assert!(matches!(err, VideoError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent-dir/clip.mp4"),
        "{err}"
    );
}

#[test]
fn poster_is_a_jpeg_of_the_chosen_frame() {
    let (width, height, count) = (48, 32, 10);
    let frames = synthetic_clip(count, width, height);
    let frame = clip_frame(&frames, count, width, height, 7).unwrap();
    let jpeg = encode_poster_jpeg(frame, width, height, 90).unwrap();
    assert_eq!(&jpeg[..3], &[0xff, 0xd8, 0xff], "JPEG SOI marker");
    let decoded = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap()
        .to_rgb8();
    assert_eq!(decoded.dimensions(), (width as u32, height as u32));
    let db = psnr(frame, decoded.as_raw());
    let other = psnr(
        clip_frame(&frames, count, width, height, 0).unwrap(),
        decoded.as_raw(),
    );
    assert!(
        db > 30.0 && db > other,
        "poster PSNR {db:.1} dB vs frame 0 {other:.1} dB"
    );
    assert!(matches!(
        clip_frame(&frames, count, width, height, 10),
        Err(VideoError::FrameIndex { .. })
    ));
    assert!(matches!(
        encode_poster_jpeg(frame, width, height, 0),
        Err(VideoError::PosterQualityOutOfRange(0))
    ));
    assert!(matches!(
        encode_poster_jpeg(&frame[1..], width, height, 90),
        Err(VideoError::BufferSize { .. })
    ));
}

#[test]
fn identical_input_gives_identical_files() {
    let frames = synthetic_clip(6, 64, 48);
    for format in VideoFormat::ALL {
        let a = encode_video(&frames, 6, 64, 48, &options(format, 24, 80)).unwrap();
        let b = encode_video(&frames, 6, 64, 48, &options(format, 24, 80)).unwrap();
        assert!(a == b, "{format}: two encodes differ");
    }
}
