// ffnlab explore: sorting and searching a layer's neurons; live interventions. No network access beyond the app's own API.
"use strict";

// as the pages show a token (pages.py VISIBLE): spaces, line breaks and tabs made visible
function token(t) {
  return t.replace(/ /g, "␣").replace(/\n/g, "⏎").replace(/\r/g, "␍").replace(/\t/g, "⇥") || "∅";
}

function setupTable() {
  const table = document.getElementById("neurons");
  if (!table) return;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const search = document.getElementById("search");
  const shown = document.getElementById("shown");
  const params = new URLSearchParams(location.search);

  function sortBy(key, dir) {
    const th = table.querySelector(`th[data-key="${key}"]`);
    if (!th) return;
    const type = th.dataset.type, sign = dir === "asc" ? 1 : -1;
    const value = r => {
      const v = r.dataset[key];
      if (type === "num") return parseFloat(v);
      if (type === "abs") return Math.abs(parseFloat(v));
      return v;
    };
    rows.sort((a, b) => {
      const x = value(a), y = value(b);
      return (type === "text" ? x.localeCompare(y) : x - y) * sign || (a.dataset.index - b.dataset.index);
    });
    for (const r of rows) body.appendChild(r);
    table.querySelectorAll("th").forEach(h => h.classList.remove("asc", "desc"));
    th.classList.add(dir);
  }

  // a word like `active>50`, `top<-2` or `mean>=0.1` compares a statistic (active in %); other words are text
  const COMPARE = /^(mean|std|active|top)(<=|>=|<|>)(-?[\d.]+(?:e-?\d+)?)$/;
  function test(r, w) {
    const m = COMPARE.exec(w);
    if (!m) return r.dataset.search.includes(w);
    const v = parseFloat(r.dataset[m[1]]) * (m[1] === "active" ? 100 : 1), x = parseFloat(m[3]);
    return {"<": v < x, ">": v > x, "<=": v <= x, ">=": v >= x}[m[2]];
  }

  function filter(q) {
    const words = q.toLowerCase().split(/\s+/).filter(Boolean);
    let n = 0;
    for (const r of rows) {
      const hit = words.every(w => test(r, w));
      r.hidden = !hit;
      n += hit;
    }
    shown.textContent = `${n} shown`;
  }

  table.querySelectorAll("th[data-key]").forEach(th => th.addEventListener("click", () => {
    const dir = th.classList.contains("desc") ? "asc" : "desc";
    sortBy(th.dataset.key, dir);
  }));
  search.addEventListener("input", () => filter(search.value));
  if (params.get("sort")) sortBy(params.get("sort"), params.get("dir") === "asc" ? "asc" : "desc");
  if (params.get("q")) { search.value = params.get("q"); filter(search.value); }
}

function setupIntervene() {
  const form = document.getElementById("intervene-form");
  if (!form) return;
  const error = document.getElementById("error"), result = document.getElementById("result");
  let timer = null, seq = 0;

  function pct(p) { return (100 * p).toFixed(2) + "%"; }

  async function apply() {
    const query = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v.trim()) query.set(k, v);
    if (!query.get("prompt")) return;
    const mine = ++seq;
    const reply = await fetch(`${form.dataset.api}?${query}`);
    const data = await reply.json();
    if (mine !== seq) return;  // a newer request is on its way
    if (!reply.ok) {
      error.textContent = data.error; error.hidden = false;
      return;
    }
    error.hidden = true;
    const share = `${location.pathname}?${query}`;
    history.replaceState(null, "", share);
    document.getElementById("share").href = share;
    document.getElementById("kl").textContent = data.kl.toFixed(4);
    document.getElementById("top-clean").textContent = token(data.top_clean);
    document.getElementById("top-after").textContent = token(data.top_intervened);
    const body = document.querySelector("#distribution tbody");
    body.replaceChildren(...data.rows.map(r => {
      const tr = document.createElement("tr");
      const cells = [[token(r.token), ""], [pct(r.clean), "num"], [pct(r.intervened), "num"],
                     [`${(100 * (r.intervened - r.clean) >= 0 ? "+" : "")}${(100 * (r.intervened - r.clean)).toFixed(2)} pp`,
                      `num ${r.intervened > r.clean ? "up" : "down"}`]];
      cells.forEach(([text, cls], i) => {
        const td = document.createElement("td");
        if (cls) td.className = cls;
        if (i === 0) { const c = document.createElement("code"); c.className = "tok"; c.textContent = text; td.appendChild(c); }
        else td.textContent = text;
        tr.appendChild(td);
      });
      return tr;
    }));
    result.hidden = false;
    document.body.dataset.applied = String(mine);
  }

  form.addEventListener("submit", e => { e.preventDefault(); apply(); });
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 300); });
}

setupTable();
setupIntervene();
