// portwatch HTML report: the findings table, built from the rows embedded as JSON (text goes
// in through textContent only, never as markup), with filters, pages, and every matching row
// when printing. Summary cards filter the table by kind.
(function () {
  'use strict';
  var rows = JSON.parse(document.getElementById('portwatch-rows').textContent);
  var cluster = document.body.classList.contains('cluster');
  var body = document.getElementById('findings-body');
  var info = document.getElementById('p-info');
  var prev = document.getElementById('p-prev');
  var next = document.getElementById('p-next');
  var fSev = document.getElementById('f-sev');
  var fKind = document.getElementById('f-kind');
  var fNode = document.getElementById('f-node');
  var fText = document.getElementById('f-text');
  var fSize = document.getElementById('f-size');
  var ICON = { violation: '\u26a0', warning: '\u2716', notice: '\u25cb', info: '\u2714' };
  var hay = null;
  var shown = rows;
  var page = 0;

  function haystack(i) {
    if (!hay) { hay = new Array(rows.length); }
    if (hay[i] === undefined) { hay[i] = rows[i].join(' ').toLowerCase(); }
    return hay[i];
  }

  function filter() {
    var sev = fSev.value, kind = fKind.value, node = fNode ? fNode.value : '';
    var text = fText.value.trim().toLowerCase();
    if (!sev && !kind && !node && !text) { shown = rows; return; }
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (sev && r[0] !== sev) { continue; }
      if (kind && r[2] !== kind) { continue; }
      if (node && r[1] !== node) { continue; }
      if (text && haystack(i).indexOf(text) < 0) { continue; }
      out.push(r);
    }
    shown = out;
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    if (cls) { td.className = cls; }
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function rowElement(r) {
    var tr = document.createElement('tr');
    tr.className = 'sev-' + r[0];
    cell(tr, (ICON[r[0]] || '') + ' ' + r[0], 'sev');
    if (cluster) { cell(tr, r[1]); }
    cell(tr, r[2].replace(/_/g, ' '));
    cell(tr, r[3]);
    var td = cell(tr, r[4] ? '' : '-');
    if (r[4]) {
      var a = document.createElement('a');
      a.href = '#' + r[4];
      a.textContent = r[5];
      td.appendChild(a);
    }
    cell(tr, r[6] ? String(r[6]) : '-', 'r');
    cell(tr, r[6] ? String(r[7]) : '-', 'r');
    cell(tr, r[8] || '-', 'r');
    cell(tr, r[9]);
    cell(tr, r[10]);
    cell(tr, r[11]);
    cell(tr, r[12]);
    return tr;
  }

  function draw(all) {
    var size = parseInt(fSize.value, 10) || 100;
    var pages = Math.max(1, Math.ceil(shown.length / size));
    if (page >= pages) { page = pages - 1; }
    var from = all ? 0 : page * size;
    var to = all ? shown.length : Math.min(shown.length, from + size);
    var frag = document.createDocumentFragment();
    for (var i = from; i < to; i++) { frag.appendChild(rowElement(shown[i])); }
    if (shown.length === 0) {
      var tr = document.createElement('tr');
      var td = cell(tr, rows.length ? 'No finding matches the filters.' : 'No findings.');
      td.colSpan = cluster ? 13 : 12;
      frag.appendChild(tr);
    }
    body.textContent = '';
    body.appendChild(frag);
    var of = shown.length === rows.length ? '' : ' (filtered from ' + rows.length + ')';
    info.textContent = shown.length
      ? 'Findings ' + (from + 1) + '\u2013' + to + ' of ' + shown.length + of + ', page ' + (page + 1) + ' of ' + pages
      : '0 findings' + of;
    prev.disabled = all || page === 0;
    next.disabled = all || page >= pages - 1;
  }

  function update() { filter(); page = 0; draw(false); }

  fSev.addEventListener('change', update);
  fKind.addEventListener('change', update);
  if (fNode) { fNode.addEventListener('change', update); }
  fSize.addEventListener('change', update);
  fText.addEventListener('input', update);
  prev.addEventListener('click', function () { page -= 1; draw(false); });
  next.addEventListener('click', function () { page += 1; draw(false); });
  window.addEventListener('beforeprint', function () { draw(true); });
  window.addEventListener('afterprint', function () { draw(false); });
  var cards = document.querySelectorAll('a.card[data-kind]');
  for (var i = 0; i < cards.length; i++) {
    cards[i].addEventListener('click', function (ev) {
      var k = ev.currentTarget.getAttribute('data-kind');
      var known = false;
      for (var j = 0; j < fKind.options.length; j++) { known = known || fKind.options[j].value === k; }
      fKind.value = known ? k : '';
      fSev.value = '';
      update();
    });
  }
  draw(false);
  document.body.setAttribute('data-ready', String(rows.length));
  document.body.setAttribute('data-drawn-ms', String(Math.round(performance.now())));
})();
