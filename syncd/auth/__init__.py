"""Authentication for the SuperOffice and Business Central clients: the implementations of
:class:`syncd.credentials.Auth`.

The API clients get an ``Auth`` and never see how the credential is made. Implementations:

* :class:`BasicAuth`: SuperOffice onsite, Business Central on-prem (user + web service access key).
* :class:`SOTicketAuth`, :class:`BearerAuth`: static SuperOffice credentials (``SOTicket 7T:…``,
  ``Bearer 8A:…``), optionally with ``SO-AppToken``.
* :class:`SuperOfficeSystemUserAuth`: SuperOffice Online server-to-server: signs the system user token with
  the application's RSA key, exchanges it at ``PartnerSystemUser/Authenticate`` for a ticket and caches it.
* :class:`ClientCredentialsAuth`: Entra ID (Azure AD) OAuth2 client credentials for Business Central
  Online, with a client secret or a certificate; caches the access token and refreshes it before expiry.

Modules: ``static`` (fixed credentials), ``cache`` (the cached, refreshed credential of the token-fetching
auths, whose token requests go through :class:`syncd.http.ApiClient`), ``entra`` (client credentials and
Entra's error table), ``superoffice`` (the system user ticket flow), ``keys`` (RSA keys, JWT pieces).

Every secret is a :class:`~syncd.secrets.Secret`; credentials obtained at run time are wrapped in
ephemeral Secrets so log redaction knows them. Errors are :class:`~syncd.errors.AuthError` (with a hint
naming the config key to fix) or :class:`~syncd.errors.UnreachableError` (network, 5xx, timeouts).
"""

from syncd.auth.cache import DEFAULT_TIMEOUT
from syncd.auth.entra import BC_SCOPE, ClientCredentialsAuth
from syncd.auth.static import BasicAuth, BearerAuth, SOTicketAuth
from syncd.auth.superoffice import SuperOfficeSystemUserAuth

__all__ = [
    "BC_SCOPE",
    "DEFAULT_TIMEOUT",
    "BasicAuth",
    "BearerAuth",
    "ClientCredentialsAuth",
    "SOTicketAuth",
    "SuperOfficeSystemUserAuth",
]
