// The scorecard page's own script: draws the plotly figures written by evaluator/scorecard/figures.py and
// opens a heatmap cell's replay in the player (player.js) when the cell is clicked. Everything it needs is
// inlined in the page; it fetches nothing except a replay that was linked rather than embedded.
(function () {
  "use strict";
  const figures = JSON.parse(document.getElementById("scorecard-figures").textContent);
  const data = JSON.parse(document.getElementById("scorecard-data").textContent);
  const config = { responsive: true, displaylogo: false };

  function plot(id, figure) {
    const element = document.getElementById(id);
    if (!element || !figure || !figure.data || figure.data.length === 0) {
      if (element) element.style.display = "none";
      return null;
    }
    Plotly.newPlot(element, figure.data, figure.layout || {}, config);
    return element;
  }

  const heatmap = plot("heatmap", figures.heatmap);
  plot("suite", figures.suite);
  plot("environment-multiples", figures.environments);
  if (figures.crossplay && figures.crossplay.data[0].z.length) plot("crossplay", figures.crossplay);

  const player = window.ReplayPlayer.mount(document.getElementById("player"));
  const hint = document.getElementById("replay-hint");

  function openReplay(row, column) {
    const ref = (data.replays[row] || [])[column];
    const title = data.rows[row] + " · " + data.envs[column] + " · episode 0";
    if (!ref) {
      hint.textContent = "no replay was recorded for " + title + " (run with --replays)";
      return;
    }
    const source = ref.src || ref.url;
    if (!ref.src && location.protocol === "file:" && !/^https?:/.test(ref.url)) {
      hint.textContent = "this replay is not embedded in the page: open the run with `policy-evaluator view`";
    } else {
      hint.textContent = title;
    }
    document.getElementById("player").dataset.cell = row + "," + column;
    player.load(source, { title: title });
  }

  if (heatmap) {
    heatmap.on("plotly_click", function (event) {
      const point = event.points[0]; // a heatmap point's pointNumber is [row, column]
      openReplay(point.pointNumber[0], point.pointNumber[1]);
    });
  }
  window.scorecard = { openReplay: openReplay, player: player, data: data };
})();
