// The player page: hls.js on playback's HLS manifest (content steering + redundant variants), showing
// which appliance serves the fragments, the bitrate and the buffer; posts viewing events.
(function () {
  const id = decodeURIComponent(location.pathname.split('/').pop());
  const params = new URLSearchParams(location.search);
  const video = document.getElementById('video');
  const state = window.playerState = {servedBy: null, hosts: [], errors: [], pathway: null, bitrate: 0,
                                      level: null, frags: 0};
  const userId = localStorage.getItem('userId') || (() => {
    const u = 'u-' + Math.random().toString(36).slice(2); localStorage.setItem('userId', u); return u;
  })();
  fetch('/v1/titles/' + encodeURIComponent(id)).then(r => r.json()).then(t => {
    document.getElementById('name').textContent = t.title || id;
  });
  const send = (event) => {
    const level = hls && hls.levels[hls.currentLevel];
    const body = {userId, videoId: id, event, timestamp: Date.now(), position: video.currentTime || 0};
    if (level && level.name) body.rendition = level.name;
    const text = JSON.stringify(body);
    if (event === 'stop' && navigator.sendBeacon) navigator.sendBeacon('/v1/events', new Blob([text], {type: 'application/json'}));
    else fetch('/v1/events', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: text});
  };
  const retry = {maxNumRetry: 2, retryDelayMs: 200, maxRetryDelayMs: 1000};
  const policy = {default: {maxTimeToFirstByteMs: 4000, maxLoadTimeMs: 10000, timeoutRetry: retry, errorRetry: retry}};
  const hls = new Hls({
    maxBufferLength: Number(params.get('buffer') || 30), maxMaxBufferLength: Number(params.get('buffer') || 60),
    fragLoadPolicy: policy, playlistLoadPolicy: policy, steeringManifestLoadPolicy: policy,
  });
  window.hls = hls;
  hls.on(Hls.Events.FRAG_LOADED, (_, data) => {
    const host = new URL(data.frag.url).host;
    state.servedBy = host; state.frags += 1;
    if (state.hosts[state.hosts.length - 1] !== host) state.hosts.push(host);
    document.getElementById('served').textContent = host;
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => {
    const level = hls.levels[data.level];
    state.level = level.name || data.level; state.bitrate = level.bitrate; state.pathway = level.pathwayId;
    document.getElementById('bitrate').textContent = Math.round(level.bitrate / 1000) + ' kbit/s (' + level.height + 'p)';
    document.getElementById('pathway').textContent = level.pathwayId || '–';
  });
  hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_, data) => {
    state.steering = data.steeringManifest && data.steeringManifest['PATHWAY-PRIORITY'];
  });
  hls.on(Hls.Events.ERROR, (_, data) => {
    state.errors.push(data.details + (data.fatal ? ' (fatal)' : ''));
    document.getElementById('log').textContent = 'errors: ' + state.errors.slice(-5).join(', ');
    if (data.fatal && data.type === Hls.ErrorTypes.NETWORK_ERROR) setTimeout(() => hls.startLoad(), 500);
    else if (data.fatal && data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  setInterval(() => {
    const b = video.buffered;
    let ahead = 0;
    for (let i = 0; i < b.length; i++) if (b.start(i) <= video.currentTime && video.currentTime <= b.end(i)) ahead = b.end(i) - video.currentTime;
    document.getElementById('buffer').textContent = ahead.toFixed(1) + ' s';
    document.getElementById('time').textContent = video.currentTime.toFixed(1);
  }, 250);
  let playing = false;
  video.addEventListener('playing', () => { if (!playing) { playing = true; send('play'); } });
  video.addEventListener('ended', () => send('stop'));
  window.addEventListener('pagehide', () => send('stop'));
  setInterval(() => { if (playing && !video.paused) send('progress'); }, 5000);
  hls.loadSource('/v1/playback/' + encodeURIComponent(id) + '/master.m3u8');
  hls.attachMedia(video);
  hls.on(Hls.Events.MANIFEST_PARSED, () => { video.play().catch(e => state.errors.push('play: ' + e)); });
})();
