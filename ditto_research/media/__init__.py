"""Media I/O in one place: what goes in (the source portrait image or video) and what comes out (the MP4).

    ffmpeg.py        the ffmpeg binary and every command line run with it (argument lists, log reading)
    source.py        load_source: the portrait image or video, resized, random access by frame index
    loop.py          mirror_index: the one mirror-loop rule (clip forwards, backwards, forwards, ...)
    writer.py        VideoWriter: frames -> H.264 MP4 with the speech muxed in as AAC; probe_video;
                     write_frames: the one "write frames" path of every run
    output_files.py  output reservation and hidden temporaries, so an output appears whole or not at all

Audio decoding to 16 kHz mono stays in :mod:`ditto_research.audio.io` (librosa's rules for the model's
input); it runs ffmpeg through :mod:`ditto_research.media.ffmpeg` too. Submodules are imported on their own:
importing this package loads nothing heavy.
"""
