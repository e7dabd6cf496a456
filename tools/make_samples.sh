#!/usr/bin/env bash
# Produce the sample media shipped in runwatch/data/samples/.
#
# Run once by hand when the samples need to change; the output is committed, so neither
# the runtime nor CI needs these tools. Needs (Debian package names):
#   apt-get install ffmpeg imagemagick espeak-ng flac
#
# Two kinds of file come out:
#   still.png still.jpg portrait.jpg clip.mp4 speech.wav speech.mp3 music.mp3
#       inputs a user would upload (every file >= 512 bytes, Runway's upload minimum;
#       speech is > 4.6 s because voice isolation refuses shorter audio)
#   base.mp4 base.jpg base.webp base.mp3 base.flac base.ogg
#       tiny encoded files that runwatch.mediafiles.make_output stamps with a task token
#       (the standard library cannot encode H.264, JPEG, WebP, MP3, FLAC or Opus itself)
#
# Determinism: ImageMagick is told not to write timestamps, ffmpeg runs with bitexact
# flags, no metadata and a single x264 thread, so re-running with the same tool versions
# gives the same bytes. Different versions may differ slightly; that is harmless.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/runwatch/data/samples}"
# /usr/bin/convert explicitly: some machines put a non-ImageMagick "convert" earlier on PATH.
CONVERT="${CONVERT:-/usr/bin/convert}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
# Options shared by every ffmpeg output: no creation time, no encoder string, no tags.
bitexact=(-map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact)
png_opts=(-strip -define "png:exclude-chunks=date,time,tIME")

# --- stills ----------------------------------------------------------------------------
# A house on a hill under a sun: recognisable at a glance, and flat colours keep it small.
"$CONVERT" -size 640x360 gradient:'#3a7bd5-#bfe6ff' \
  -fill '#ffd23f' -stroke '#f4a300' -strokewidth 3 -draw 'circle 520,80 520,125' \
  -stroke none -fill '#4caf50' -draw 'ellipse 160,390 300,130 0,360' \
  -fill '#2e7d32' -draw 'ellipse 520,400 280,120 0,360' \
  -fill '#c62828' -draw 'rectangle 250,200 370,290' \
  -fill '#6d4c41' -draw 'polygon 235,200 310,140 385,200' \
  -fill '#fff59d' -draw 'rectangle 270,220 300,250' \
  -fill '#5d4037' -draw 'rectangle 325,240 350,290' \
  -font DejaVu-Sans-Bold -pointsize 22 -fill white -draw "text 16,340 'runwatch sample'" \
  "${png_opts[@]}" "$out/still.png"
"$CONVERT" "$out/still.png" -strip -quality 82 -sampling-factor 4:2:0 "$out/still.jpg"

# A striped lighthouse by the sea, 9:16.
"$CONVERT" -size 360x640 gradient:'#ff9a62-#ffe0b2' \
  -fill '#1565c0' -draw 'rectangle 0,470 360,640' \
  -fill '#90caf9' -draw 'line 0,470 360,470' \
  -fill '#616161' -draw 'polygon 120,640 240,640 215,560 145,560' \
  -fill '#fafafa' -draw 'polygon 150,560 210,560 200,200 160,200' \
  -fill '#d32f2f' -draw 'polygon 157,440 203,440 201,380 159,380' \
  -fill '#d32f2f' -draw 'polygon 161,320 199,320 198,260 162,260' \
  -fill '#fff176' -draw 'rectangle 160,170 200,200' \
  -fill '#37474f' -draw 'polygon 150,170 210,170 180,130' \
  -font DejaVu-Sans-Bold -pointsize 20 -fill white -draw "text 16,620 'runwatch portrait'" \
  -strip -quality 82 -sampling-factor 4:2:0 "$out/portrait.jpg"

# --- video -----------------------------------------------------------------------------
# A 3 s pan across the still, 640x360 H.264 at 24 fps; faststart puts moov first so a
# prefix of the file is enough to probe it.
"$CONVERT" "$out/still.png" -resize 800x450 "${png_opts[@]}" "$work/wide.png"
ff -loop 1 -framerate 24 -i "$work/wide.png" -t 3 \
  -vf "crop=640:360:x='t*50':y='t*25',format=yuv420p" \
  -c:v libx264 -preset medium -crf 30 -profile:v high -threads 1 -x264-params threads=1 \
  -movflags +faststart "${bitexact[@]}" "$out/clip.mp4"

# The base of every mp4/mov task output: 1 s, 320x180, same pan, as small as is decent.
"$CONVERT" "$out/still.png" -resize 400x225 "${png_opts[@]}" "$work/small.png"
ff -loop 1 -framerate 24 -i "$work/small.png" -t 1 \
  -vf "crop=320:180:x='t*60':y='t*30',format=yuv420p" \
  -c:v libx264 -preset medium -crf 34 -profile:v high -threads 1 -x264-params threads=1 \
  -movflags +faststart "${bitexact[@]}" "$out/base.mp4"

# --- image bases -----------------------------------------------------------------------
"$CONVERT" "$out/still.png" -resize 320x180 -strip -quality 75 -sampling-factor 4:2:0 "$out/base.jpg"
# Plain lossy WebP (one 'VP8 ' chunk); make_output wraps it in the extended format itself.
ff -i "$work/small.png" -vf "crop=320:180:0:0" -c:v libwebp -lossless 0 -quality 70 \
  "${bitexact[@]}" "$out/base.webp"

# --- audio -----------------------------------------------------------------------------
text="Hello from runwatch. This is a short speech sample for testing voice isolation."
espeak-ng -v en-us -s 150 -w "$work/speech_raw.wav" "$text"
# About 5.2 s of speech, padded with silence to exactly 6 s at 16 kHz mono: long enough
# for voice isolation (> 4.6 s) without cutting a word.
ff -i "$work/speech_raw.wav" -af "apad=whole_dur=6" -t 6 -ar 16000 -ac 1 -c:a pcm_s16le \
  "${bitexact[@]}" "$out/speech.wav"
ff -i "$out/speech.wav" -c:a libmp3lame -b:a 32k -id3v2_version 0 -write_xing 1 \
  "${bitexact[@]}" "$out/speech.mp3"

# Six seconds of a C major arpeggio with a soft decay, for music-shaped inputs.
notes="261.63 329.63 392.00 523.25 392.00 329.63"
inputs=()
filters=""
i=0
for f in $notes; do
  inputs+=(-f lavfi -i "sine=frequency=$f:sample_rate=22050:duration=1")
  filters+="[$i:a]volume='0.6*exp(-2.5*t)':eval=frame[n$i];"
  i=$((i + 1))
done
concat="$(for j in $(seq 0 $((i - 1))); do printf '[n%d]' "$j"; done)"
ff "${inputs[@]}" -filter_complex "${filters}${concat}concat=n=$i:v=0:a=1[a]" -map "[a]" \
  -ac 1 -c:a libmp3lame -b:a 40k -id3v2_version 0 -write_xing 1 "${bitexact[@]}" "$out/music.mp3"

# Output bases: a 1 s, 440 Hz tone in each codec; make_output adds the token as metadata.
ff -f lavfi -i "sine=frequency=440:sample_rate=22050:duration=1" -ac 1 \
  -c:a libmp3lame -b:a 32k -id3v2_version 0 -write_xing 1 "${bitexact[@]}" "$out/base.mp3"
ff -f lavfi -i "sine=frequency=440:sample_rate=16000:duration=1" -ac 1 -c:a flac \
  "${bitexact[@]}" "$work/base.flac"
# Drop ffmpeg's 8 KiB padding and its tags; make_output writes its own comment block.
metaflac --remove-all --dont-use-padding "$work/base.flac"
cp "$work/base.flac" "$out/base.flac"
ff -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=1" -ac 1 \
  -c:a libopus -b:a 24k "${bitexact[@]}" "$out/base.ogg"

ls -l "$out"
du -sb "$out"
