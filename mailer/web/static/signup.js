/* The signup forms' own script (mailer/web/challenge.py): gives the ALTCHA widget its
   proof-of-work worker and the page's words. It sends nothing anywhere: the widget asks our
   /altcha/challenge, solves it in a worker, and puts the answer in the form. */
(function () {
  "use strict";
  var worker = new URL("altcha/pbkdf2.js", document.currentScript.src).href;

  function makeWorker() {
    if (new URL(worker).origin === window.location.origin) {
      return new Worker(worker);
    }
    // The embedded form on another site: a browser starts workers from the page's own origin
    // only, so the page makes a tiny one that loads ours.
    var loader = "importScripts(" + JSON.stringify(worker) + ");";
    return new Worker(URL.createObjectURL(new Blob([loader], { type: "text/javascript" })));
  }

  ["PBKDF2/SHA-256", "PBKDF2/SHA-384", "PBKDF2/SHA-512"].forEach(function (name) {
    window.$altcha.algorithms.set(name, makeWorker);
  });
  document.querySelectorAll("altcha-widget[data-strings]").forEach(function (widget) {
    var language = widget.getAttribute("language") || "en";
    var words = JSON.parse(widget.getAttribute("data-strings"));
    window.$altcha.i18n.set(language, Object.assign({}, window.$altcha.i18n.get("en"), words));
  });
})();
