"""The scorecard: a run's report as one self-contained HTML page (`page`), its charts (`figures`) and the
browser replay player it embeds (`assets/player.js`)."""
