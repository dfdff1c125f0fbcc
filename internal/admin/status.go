package admin

// statusPage is the live pool view: self-contained (no external assets),
// it polls the JSON API once a second.
const statusPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>HttpGw status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.sub{color:#667;margin-bottom:16px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001}
th,td{padding:6px 10px;text-align:left;border-bottom:1px solid #e6e8ec;white-space:nowrap}
th{background:#eef0f4;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#0a7d32;font-weight:600}.down{color:#b3261e;font-weight:600}
.bar{background:#e6e8ec;border-radius:3px;height:10px;width:220px;overflow:hidden}
.bar>i{display:block;height:100%;background:#2f6fde}
.empty{color:#889;padding:10px}
#stats span{display:inline-block;margin-right:18px}
</style></head><body>
<h1>HttpGw</h1><div class="sub">Live pool status &middot; refreshes every second &middot; <span id="clock"></span></div>
<div id="stats"></div>
<h2>Servers</h2>
<table><thead><tr><th>server</th><th>key</th><th>address</th><th>health</th><th class="n">RTT</th><th class="n">throughput</th><th class="n">in flight</th><th class="n">window</th><th class="n">files</th><th class="n">delivered</th><th class="n">retransmits</th><th>last heard</th></tr></thead>
<tbody id="servers"></tbody></table>
<h2>Active downloads</h2>
<table><thead><tr><th>path</th><th class="n">size</th><th>progress</th><th class="n">sent</th><th>started</th></tr></thead>
<tbody id="downloads"></tbody></table>
<script>
function fmtBytes(n){if(n<1024)return n+" B";const u=["KiB","MiB","GiB","TiB"];let i=-1;do{n/=1024;i++}while(n>=1024&&i<u.length-1);return n.toFixed(n<10?1:0)+" "+u[i]}
function fmtUs(us){return us<1000?us+" µs":(us/1000).toFixed(1)+" ms"}
function ago(t){const s=(Date.now()-new Date(t))/1000;return s<1?"now":s.toFixed(1)+" s ago"}
function agoMs(ms){return ms<1000?"now":(ms/1000).toFixed(1)+" s ago"}
function esc(s){return String(s).replace(/[&<>"']/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]))}
function row(cells){return "<tr>"+cells.join("")+"</tr>"}
async function refresh(){
  try{
    const [servers,downloads,stats]=await Promise.all(["/api/servers","/api/downloads","/api/stats"].map(u=>fetch(u).then(r=>r.json())));
    document.getElementById("servers").innerHTML=(servers||[]).map(s=>row([
      "<td title='instance "+esc(s.id)+"'>"+esc(s.name)+"</td>","<td class=key title='public key (shortened): the server&#39;s identity'><code>"+esc(s.key)+"</code></td>","<td>"+esc(s.addr)+"</td>",
      "<td class='"+(s.health=="up"?"up'>up":"down'>silent")+"</td>",
      "<td class=n>"+fmtUs(s.srtt_us)+"</td>","<td class=n>"+fmtBytes(Math.round(s.rate_bytes_per_sec))+"/s</td>",
      "<td class=n>"+fmtBytes(s.inflight_bytes)+"</td>","<td class=n>"+fmtBytes(s.window_bytes)+"</td>",
      "<td class=n>"+s.files+"</td>","<td class=n>"+fmtBytes(s.delivered_bytes)+"</td>","<td class=n>"+s.retransmits+"</td>",
      "<td>"+agoMs(s.heard_ago_ms)+"</td>"])).join("")||"<tr><td colspan=12 class=empty>no server in the pool</td></tr>";
    document.getElementById("downloads").innerHTML=(downloads||[]).map(d=>{const p=d.size?d.position/d.size*100:100;return row([
      "<td>"+esc(d.path)+"</td>","<td class=n>"+fmtBytes(d.size)+"</td>",
      "<td><div class=bar><i style='width:"+p.toFixed(1)+"%'></i></div></td>","<td class=n>"+p.toFixed(0)+"%</td>","<td>"+ago(d.started)+"</td>"])}).join("")||"<tr><td colspan=5 class=empty>no download in progress</td></tr>";
    const u=stats.udp,e=stats.engine;
    document.getElementById("stats").innerHTML=["<span><b>"+(servers||[]).length+"</b> servers</span>",
      "<span><b>"+fmtBytes(e.delivered_bytes)+"</b> fetched</span>","<span><b>"+e.retransmits+"</b> retransmissions</span>",
      "<span><b>"+u.drop_auth+"</b> auth failures</span>","<span><b>"+u.drop_replay+"</b> replays dropped</span>",
      "<span><b>"+u.evictions+"</b> evictions</span>","<span><b>"+u.revoked+"</b> revoked</span>",
      "<span><b>"+(u.drop_unlisted+u.drop_identity)+"</b> unlisted or stolen keys refused</span>"].join("");
    document.getElementById("clock").textContent=new Date().toLocaleTimeString();
  }catch(err){document.getElementById("clock").textContent="admin API unreachable: "+err}
}
refresh();setInterval(refresh,1000);
</script></body></html>
`
