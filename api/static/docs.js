// The interactive API reference: Swagger UI (the swagger-ui-dist npm package, copied to
// /static/vendor/ by `make install`) rendering the daemon's own /openapi.json.
"use strict";

(function () {
  if (typeof window.SwaggerUIBundle !== "function") {
    document.getElementById("vendor-missing").hidden = false;
    return;
  }
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No call to the public validator service: the daemon may run where it is unreachable.
    validatorUrl: null,
  });
})();
