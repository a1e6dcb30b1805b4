// Swagger UI on the API's own OpenAPI document (/api/docs). A file rather than an inline
// script: the Content-Security-Policy allows scripts from this server only.
(function () {
  "use strict";
  var target = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: target.dataset.specUrl,
    domNode: target,
    deepLinking: true,
    // Keys are typed in by hand: never fetch anything from elsewhere (no validator badge).
    validatorUrl: null,
  });
})();
