// Passkeys (WebAuthn) on Civitas pages: progressive enhancement, no dependencies.
//
// A button with data-passkey="create" or "get" runs a ceremony: it POSTs to data-start
// (with the page's anti-forgery token in X-CSRF-Token), turns the base64url fields of the
// options into ArrayBuffers for navigator.credentials, sends the result back to
// data-finish as base64url JSON (webauthn-rs's shape) and follows {redirect}. Sections
// marked data-passkey-section stay hidden unless this browser supports passkeys; elements
// marked data-passkey-nojs are hidden when it does.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }

  function toBuffer(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) {
      b64 += "=";
    }
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) {
      bytes[i] = bin.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toB64url(buffer) {
    if (!buffer) {
      return null;
    }
    var bytes = new Uint8Array(buffer);
    var bin = "";
    for (var i = 0; i < bytes.length; i++) {
      bin += String.fromCharCode(bytes[i]);
    }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function convertList(list) {
    return (list || []).map(function (c) {
      var copy = Object.assign({}, c);
      copy.id = toBuffer(c.id);
      return copy;
    });
  }

  function creationOptions(pk) {
    var o = Object.assign({}, pk);
    o.challenge = toBuffer(pk.challenge);
    o.user = Object.assign({}, pk.user, { id: toBuffer(pk.user.id) });
    if (pk.excludeCredentials) {
      o.excludeCredentials = convertList(pk.excludeCredentials);
    }
    return o;
  }

  function requestOptions(pk) {
    var o = Object.assign({}, pk);
    o.challenge = toBuffer(pk.challenge);
    if (pk.allowCredentials) {
      o.allowCredentials = convertList(pk.allowCredentials);
    }
    return o;
  }

  function extensions(cred) {
    var out = {};
    var results = cred.getClientExtensionResults ? cred.getClientExtensionResults() : {};
    if (results && results.credProps) {
      out.credProps = { rk: results.credProps.rk };
    }
    return out;
  }

  function registrationJson(cred) {
    var r = cred.response;
    var json = {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        attestationObject: toB64url(r.attestationObject),
        clientDataJSON: toB64url(r.clientDataJSON)
      },
      extensions: extensions(cred)
    };
    if (r.getTransports) {
      json.response.transports = r.getTransports();
    }
    return json;
  }

  function assertionJson(cred) {
    var r = cred.response;
    return {
      id: cred.id,
      rawId: toB64url(cred.rawId),
      type: cred.type,
      response: {
        authenticatorData: toB64url(r.authenticatorData),
        clientDataJSON: toB64url(r.clientDataJSON),
        signature: toB64url(r.signature),
        userHandle: toB64url(r.userHandle)
      },
      extensions: {}
    };
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {})
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) {
          throw new Error(data.detail || data.title || String(res.status));
        }
        return data;
      });
    });
  }

  function run(button) {
    var section = button.closest("[data-passkey-section]") || document;
    var alertBox = section.querySelector("[role=alert]");
    var csrf = button.getAttribute("data-csrf") || "";
    var creating = button.getAttribute("data-passkey") === "create";
    var labelId = button.getAttribute("data-label");
    var labelInput = labelId ? document.getElementById(labelId) : null;
    if (alertBox) {
      alertBox.hidden = true;
      alertBox.textContent = "";
    }
    button.disabled = true;
    post(button.getAttribute("data-start"), csrf)
      .then(function (started) {
        var ceremony = started.ceremony;
        var call;
        if (creating) {
          call = navigator.credentials.create({ publicKey: creationOptions(started.publicKey) });
        } else {
          // Invoked by the button, not the username field's autofill: no conditional mediation.
          call = navigator.credentials.get({ publicKey: requestOptions(started.publicKey) });
        }
        return call.then(function (cred) {
          return post(button.getAttribute("data-finish"), csrf, {
            ceremony: ceremony,
            credential: creating ? registrationJson(cred) : assertionJson(cred),
            next: button.getAttribute("data-next") || "",
            label: labelInput ? labelInput.value : ""
          });
        });
      })
      .then(function (done) {
        window.location.assign(done.redirect || "/account");
      })
      .catch(function (err) {
        button.disabled = false;
        if (alertBox) {
          alertBox.textContent = err && err.message ? err.message : String(err);
          alertBox.hidden = false;
        }
      });
  }

  function init() {
    document.querySelectorAll("[data-passkey-section]").forEach(function (s) {
      s.hidden = false;
    });
    document.querySelectorAll("[data-passkey-nojs]").forEach(function (s) {
      s.hidden = true;
    });
    document.querySelectorAll("button[data-passkey]").forEach(function (b) {
      b.addEventListener("click", function () { run(b); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
