"""Case tables for tests/test_redaction.py.

Every secret below is fake but has the exact shape of the real thing (prefix, alphabet,
length), so the rules that catch these catch real ones.

SECRET_CASES: (id, input, fragments that must be gone, fragments that must remain).
BENIGN_CASES: (id, input) that must come back equal to the input.
"""

from __future__ import annotations

from typing import Any

# --- fake secrets in real shapes ---------------------------------------------------------------
OPENAI = "sk-proj-Ab3dEf9hIjKlMn0pQrStUvWxYz12AbCdEfGh34"
OPENAI_LEGACY = "sk-9aB8cD7eF6gH5iJ4kL3mN2oP1qR0sT9uV8wX7yZ6aB5cD4eF"
ANTHROPIC = "sk-ant-api03-" + "q9Wk_Zr4-Tm2" * 7 + "AA"
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_TEMP_ID = "ASIAY34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_OAUTH = "gho_Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
GITHUB_APP = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_PAT = "github_pat_11ABCDEFG0abcdefghijkl_" + "mn0pQrStUvWxYz1234567890" * 2 + "abcdefghijk"
GITLAB = "glpat-Xy9zAb8cDe7fGh6iJk5L"
SLACK_BOT = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_USER = "xoxp-123456789012-123456789012-123456789012-0123456789abcdef0123456789abcdef"
SLACK_APP = "xapp-1-A0123456789-1234567890123-0123456789abcdef"
SLACK_HOOK_PATH = "T0ABCDEFG/B0ABCDEFG/abcdefghijklmnopqrstuvwx"
STRIPE = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_TEST = "sk_test_51H8xYzAbCdEfGhIjKlMnOpQr"
STRIPE_RESTRICTED = "rk_live_51H8xYzAbCdEfGhIjKlMnOpQr"
STRIPE_WEBHOOK = "whsec_1234567890abcdefghijABCDEFGHIJ"
GOOGLE = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
GOOGLE_OAUTH = "ya29.a0AfH6SMBx1y2z3A4b5C6d7E8f9G0h1I2j3K4l5"
GOOGLE_CLIENT_SECRET = "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"
HUGGINGFACE = "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ12345678"
NPM = "npm_a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8"
PYPI = "pypi-AgEIcHlwaS5vcmc" + "CJDk3NTAxYmE5LTQ1ZjMtNDg3Ny04OTk1LTFjMDc0NmU2ZmE0NAACKlsz"
SENDGRID = "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"
TWILIO = "SK0123456789abcdef0123456789abcdef"
DIGITALOCEAN = "dop_v1_" + "0123456789abcdef" * 4
SHOPIFY = "shpat_0123456789abcdef0123456789abcdef"
DATABRICKS = "dapi0123456789abcdef0123456789abcdef"
GROQ = "gsk_" + "AbCdEfGhIj0123456789" * 2 + "KlMnOpQr"
REPLICATE = "r8_" + "AbCdEfGhIj0123456789AbCdEfGhIj0123456789"
PERPLEXITY = "pplx-" + "0123456789abcdefABCDEF" * 2
XAI = "xai-" + "AbCdEfGhIj0123456789" * 3
LANGSMITH = "lsv2_pt_0123456789abcdef0123456789abcdef_0123456789"
VAULT = "hvs.CAESIJlWh0Zr3vQhM3Xb9kQmA1B2C3D4E5F6"
ATLASSIAN = "ATATT3xFfGF0" + "AbCdEfGhIjKlMnOpQrSt0123456789" * 2
POSTMAN = "PMAK-0123456789abcdef01234567-0123456789abcdef0123456789abcdef01"
LINEAR = "lin_api_" + "AbCdEfGhIj0123456789" * 2
NOTION = "ntn_" + "0123456789AbCdEfGhIj" * 2 + "xyz"
AGE = "AGE-SECRET-KEY-1" + "QYZ0123456789ACDEFGHJKLMNPQRSTUVWXYZ0123456789ACDEFGHJKLMN"
TELEGRAM_SECRET = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"
AZURE_SECRET_TAIL = "~AbCdEfGhIjKlMnOpQrStUvWxYz0123456"
DISCORD_HOOK_SECRET = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefgh"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFkYSIsImlhdCI6MTUxNjIzOTAyMn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\nZ1BjP5CE/Wm/Rr500P" + "RK+Lh9x5eJ" * 3
PEM_RSA = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
SHA1 = "3fa948e1234567890abcdef1234567890abcdef0"
UUID = "123e4567-e89b-12d3-a456-426614174000"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

CaseRow = tuple[str, Any, tuple[str, ...], tuple[str, ...]]

# --- secrets under sensitive keys, every spelling ---------------------------------------------
KEY_CASES: list[CaseRow] = [
    (f"key:{key}", {key: value, "model": "gpt-4o"}, (str(value),), (key, "gpt-4o"))
    for key, value in [
        ("OPENAI_API_KEY", "plain-value-1"),
        ("x-api-key", "plain-value-2"),
        ("X-API-Key", "plain-value-3"),
        ("apiKey", "plain-value-4"),
        ("ApiKey", "plain-value-5"),
        ("APIKEY", "plain-value-6"),
        ("api.key", "plain-value-7"),
        ("api key", "plain-value-8"),
        ("access_token", "plain-value-9"),
        ("accessToken", "plain-value-10"),
        ("client_secret", "plain-value-11"),
        ("clientSecret", "plain-value-12"),
        ("db_password", "plain-value-13"),
        ("DB_PASSWORD", "plain-value-14"),
        ("dbPassword", "plain-value-15"),
        ("PGPASSWORD", "plain-value-16"),
        ("proxy-authorization", "Basic plain-value-17"),
        ("Proxy-Authorization", "Negotiate plain-value-18"),
        ("set-cookie", "sid=plain-value-19; Path=/"),
        ("Set-Cookie", "sid=plain-value-20; HttpOnly"),
        ("cookie", "a=plain-value-21"),
        ("private_key", "plain-value-22"),
        ("privateKey", "plain-value-23"),
        ("passwd", "plain-value-24"),
        ("authorization", "Bearer plain-value-25"),
        ("refresh_token", "plain-value-26"),
        ("secret", "plain-value-27"),
        ("aws_secret_access_key", "plain-value-28"),
        ("AWS_SECRET_ACCESS_KEY", "plain-value-29"),
        ("SecretAccessKey", "plain-value-30"),
        ("sessionid", "plain-value-31"),
        ("PHPSESSID", "plain-value-32"),
        ("auth_token", "plain-value-33"),
        ("X-Auth-Token", "plain-value-34"),
        ("token", "plain-value-35"),
        ("mysql_pwd", "plain-value-36"),
        ("DB_PASS", "plain-value-37"),
        ("secret_key_base", "plain-value-38"),
        ("passphrase", "plain-value-39"),
        ("x-goog-api-key", "plain-value-40"),
        ("Ocp-Apim-Subscription-Key", "plain-value-41"),
        ("X-Vault-Token", "plain-value-42"),
        ("webhook_secret", "plain-value-43"),
        ("encryption_key", "plain-value-44"),
        ("signing_key", "plain-value-45"),
        ("secret_id", "plain-value-46"),
        ("APP_KEY", "plain-value-47"),
        ("AccountKey", "plain-value-48"),
        ("seed_phrase", "plain-value-49"),
        ("pwd", "plain-value-50"),
        ("csrftoken", "plain-value-51"),
        ("password2", "plain-value-52"),
        ("password", 123456789),  # numbers under a password key are secrets too
        ("api_key", 987654321),
    ]
]

STRUCTURE_CASES: list[CaseRow] = [
    ("nested-headers", {"request": {"headers": {"Authorization": "Bearer opaque-tok-1"}}},
     ("opaque-tok-1",), ("request", "headers", "Authorization")),
    ("list-of-dicts", [{"name": "a", "password": "pw-list-1"}, {"name": "b"}],
     ("pw-list-1",), ("name",)),
    ("credentials-dict", {"credentials": {"username": "bob", "password": "pw-dict-1"}},
     ("pw-dict-1", "bob"), ("credentials",)),
    ("secret-list-value", {"api_keys": ["k-one-111", "k-two-222"]}, ("k-one-111", "k-two-222"), ()),
    ("header-pairs", {"headers": [["Authorization", "Basic opaque-pair-1"], ["Accept", "text/html"]]},
     ("opaque-pair-1",), ("Accept", "text/html")),
    ("asgi-bytes-pairs", [(b"authorization", b"Bearer opaque-bytes-1"), (b"host", b"example.com")],
     ("opaque-bytes-1",), ("authorization", "example.com")),
    ("tuple-value", {"auth": ("bob", "pw-tuple-1")}, ("pw-tuple-1",), ("auth",)),
    ("bytes-value", {"note": b"export API_KEY=opaque-b-1"}, ("opaque-b-1",), ("export API_KEY=",)),
    ("secret-in-key", {f"used {GITHUB} for clone": True}, (GITHUB,), ("for clone",)),
    ("set-of-secrets", {"tokens_seen": {f"Bearer {OPENAI}"}}, (OPENAI,), ("Bearer ",)),
    ("deep", {"a": {"b": {"c": {"d": [{"e": {"client_secret": "deep-s-1"}}]}}}}, ("deep-s-1",), ("e",)),
    ("repr-object", {"cfg": type("Settings", (), {"__repr__": lambda self: "Settings(api_key='opaque-r-1')"})()},
     ("opaque-r-1",), ("Settings(api_key=",)),
]

# --- secrets inside text --------------------------------------------------------------------
TEXT_CASES: list[CaseRow] = [
    ("curl-bearer", 'curl -H "Authorization: Bearer opaque1234" https://api.example.com',
     ("opaque1234",), ('curl -H "Authorization: Bearer ', '" https://api.example.com')),
    ("bare-bearer", f"retrying with Bearer {OPENAI_LEGACY[3:]} now", (OPENAI_LEGACY[3:],), ("retrying with Bearer ", " now")),
    ("bearer-lower", "header was bearer abc.def-123_xyz ok", ("abc.def-123_xyz",), ("header was bearer ", " ok")),
    ("basic-header", "Authorization: Basic dXNlcjpodW50ZXIy", ("dXNlcjpodW50ZXIy",), ("Authorization: Basic",)),
    ("basic-bare", "sent Basic dXNlcjpodW50ZXIy to proxy", ("dXNlcjpodW50ZXIy",), ("sent Basic ", " to proxy")),
    ("header-line", "X-Api-Key: opaque-h-1\nAccept: */*", ("opaque-h-1",), ("X-Api-Key: ", "Accept: */*")),
    ("cookie-header", "Cookie: sessionid=abc123; csrftoken=def456\nHost: x", ("abc123", "def456"), ("Cookie: ", "Host: x")),
    ("set-cookie-header", "Set-Cookie: id=a3fWa; Expires=Wed; Secure", ("a3fWa",), ("Set-Cookie: ",)),
    ("jwt-prose", f"the id_token is {JWT}, valid for 1h", (JWT, JWT.split(".")[2]), ("the id_token is ", "valid for 1h")),
    ("jwt-query", f"GET /cb?state=xyz&code={JWT}&x=1", (JWT,), ("GET /cb?state=xyz&code=", "&x=1")),
    ("pem-rsa", f"key file:\n{PEM_RSA}\nend of file", ("MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi", "RK+Lh9x5eJ"),
     ("-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "end of file")),
    ("pem-openssh", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
     ("b3BlbnNzaC1rZXktdjEAAAAA",), ("BEGIN OPENSSH PRIVATE KEY",)),
    ("pem-ec", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5\n-----END EC PRIVATE KEY-----",
     ("MHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5",), ("END EC PRIVATE KEY",)),
    ("pem-encrypted", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTAp\n-----END ENCRYPTED PRIVATE KEY-----",
     ("MIIFHDBOBgkqhkiG9w0BBQ0wQTAp",), ("ENCRYPTED PRIVATE KEY",)),
    ("pem-pgp", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0bTjgBCADZ8k3n\n-----END PGP PRIVATE KEY BLOCK-----",
     ("lQOYBF0bTjgBCADZ8k3n",), ("PGP PRIVATE KEY BLOCK",)),
    ("pem-json-escaped", '{"type": "service_account", "pk": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG\\n-----END PRIVATE KEY-----\\n"}',
     ("MIIEvQIBADANBgkqhkiG",), ('"type": "service_account"', "BEGIN PRIVATE KEY")),
    ("pem-no-end", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nMIIEvQIBADANBgk", ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "MIIEvQIBADANBgk"), ("BEGIN PRIVATE KEY",)),
    ("url-postgres", "connecting to postgres://app:pg-pass-1@db.internal:5432/plans", ("pg-pass-1",),
     ("postgres://app:", "@db.internal:5432/plans")),
    ("url-mysql-at", "mysql://root:p@ss-w0rd@10.0.0.5/db", ("p@ss-w0rd", "ss-w0rd"), ("mysql://root:", "@10.0.0.5/db")),
    ("url-redis-nouser", "REDIS_URL=redis://:redis-pass-1@cache:6379/0", ("redis-pass-1",), ("redis://:", "@cache:6379/0")),
    ("url-amqp", "broker amqp://guest:amqp-pass-1@rabbit//", ("amqp-pass-1",), ("amqp://guest:", "@rabbit//")),
    ("url-git-token", "git clone https://x-access-token:opaque-git-1@github.com/o/r.git", ("opaque-git-1",),
     ("https://x-access-token:", "@github.com/o/r.git")),
    ("url-mongo-srv", "mongodb+srv://svc:mongo-pass-1@cluster0.x.mongodb.net/?retryWrites=true", ("mongo-pass-1",),
     ("mongodb+srv://svc:", "retryWrites=true")),
    ("ado", "Server=tcp:x.database.windows.net;Database=plans;User ID=app;Password=ado-pass-1;Encrypt=true",
     ("ado-pass-1",), ("User ID=app;Password=", ";Encrypt=true")),
    ("odbc-pwd", "DRIVER={ODBC Driver 18};SERVER=db;UID=app;PWD=odbc-pass-1;", ("odbc-pass-1",), ("UID=app;PWD=",)),
    ("libpq-dsn", "host=db port=5432 dbname=plans user=app password=dsn-pass-1 sslmode=require", ("dsn-pass-1",),
     ("user=app password=", " sslmode=require")),
    ("jdbc", "jdbc:postgresql://db/plans?user=app&password=jdbc-pass-1&ssl=true", ("jdbc-pass-1",), ("user=app&password=", "&ssl=true")),
    ("export", f"export OPENAI_API_KEY={OPENAI}\nexport MODEL=gpt-4o", (OPENAI,), ("export OPENAI_API_KEY=", "export MODEL=gpt-4o")),
    ("export-plain", "export GITLAB_TOKEN=opaque-env-1", ("opaque-env-1",), ("export GITLAB_TOKEN=",)),
    ("env-quoted", 'DATABASE_PASSWORD="env quoted pass"', ("env quoted pass", "quoted"), ("DATABASE_PASSWORD=",)),
    ("env-single-quoted", "SECRET_KEY='env-sq-1' DEBUG=1", ("env-sq-1",), ("SECRET_KEY=", "DEBUG=1")),
    ("dotenv", "DEBUG=true\nSTRIPE_SECRET=dotenv-s-1\nPORT=8080", ("dotenv-s-1",), ("DEBUG=true", "PORT=8080")),
    ("json-in-string", '{"user": "bob", "password": "json-pass-1", "retries": 3}', ("json-pass-1",),
     ('"user": "bob"', '"retries": 3')),
    ("json-escaped-quote", '{"client_secret": "has \\" quote-1"}', ("quote-1",), ('"client_secret": "',)),
    ("double-encoded", '{\\"password\\": \\"dbl-pass-1\\"}', ("dbl-pass-1",), ('{\\"password\\": \\"',)),
    ("yaml", "db:\n  host: localhost\n  password: yaml-pass-1\n  port: 5432", ("yaml-pass-1",), ("host: localhost", "port: 5432")),
    ("python-kwargs", "client = OpenAI(api_key='kw-key-1', timeout=30)", ("kw-key-1",), ("client = OpenAI(api_key='", "timeout=30")),
    ("ruby-hash", '{ :password => "rb-pass-1" }', ("rb-pass-1",), (":password => ",)),
    ("cli-flag-space", "mysql -u root --password cli-pass-1 plans", ("cli-pass-1",), ("mysql -u root --password ", " plans")),
    ("cli-flag-eq", "tool --api-key=cli-key-1 --verbose", ("cli-key-1",), ("tool --api-key=", " --verbose")),
    ("curl-user", "curl -u admin:curl-pass-1 https://api.example.com/v1", ("curl-pass-1",), ("curl -u admin:", " https://api.example.com/v1")),
    ("curl-user-long", "curl --user 'svc:curl pass' --proxy-user=px:proxy-pass-1 x", ("proxy-pass-1", "curl pass"), ("curl --user 'svc:", "--proxy-user=px:")),
    ("docker-env", "docker run -e AWS_SECRET_ACCESS_KEY=dock-s-1 -e REGION=eu img", ("dock-s-1",), ("-e REGION=eu img",)),
    ("xml", "<settings><server><password>xml-pass-1</password></server></settings>", ("xml-pass-1",),
     ("<password>", "</password></server>")),
    ("query-string", "https://api.example.com/v1?api_key=q-key-1&page=2", ("q-key-1",), ("https://api.example.com/v1?api_key=", "&page=2")),
    ("api-key-spaced", "Your API Key: spaced-k-1 (keep it safe)", ("spaced-k-1",), ("Your API Key: ", "(keep it safe)")),
    ("secret-access-key-spaced", "Secret Access Key = spaced-k-2", ("spaced-k-2",), ("Secret Access Key = ",)),
    ("aws-cli-config", f"[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\nregion = eu-west-1",
     (AWS_ID, AWS_SECRET), ("[default]", "region = eu-west-1")),
    ("aws-sts-json", f'{{"AccessKeyId": "{AWS_TEMP_ID}", "SecretAccessKey": "{AWS_SECRET}", "Expiration": "2026"}}',
     (AWS_TEMP_ID, AWS_SECRET), ('"Expiration": "2026"',)),
    ("token-word", "auth ok, token: tok-plain-1, expires soon", ("tok-plain-1",), ("auth ok, token: ", "expires soon")),
    ("secret-in-traceback", "psycopg.OperationalError: connection failed: password=tb-pass-1 host=db", ("tb-pass-1",),
     ("psycopg.OperationalError: connection failed: password=", " host=db")),
    ("slack-webhook", f"posting to https://hooks.slack.com/services/{SLACK_HOOK_PATH} done", (SLACK_HOOK_PATH, "abcdefghijklmnopqrstuvwx"),
     ("https://hooks.slack.com/services/", " done")),
    ("discord-webhook", f"https://discord.com/api/webhooks/123456789012345678/{DISCORD_HOOK_SECRET}", (DISCORD_HOOK_SECRET,),
     ("https://discord.com/api/webhooks/",)),
    ("telegram", f"bot url https://api.telegram.org/bot123456789:{TELEGRAM_SECRET}/getMe", (TELEGRAM_SECRET,),
     ("https://api.telegram.org/bot123456789:", "/getMe")),
    ("azure-ad", f"client secret 8Q7x9Q{AZURE_SECRET_TAIL} saved", (AZURE_SECRET_TAIL,), ("client secret ", " saved")),
    ("long-prefix", "x " * 30000 + f"key={OPENAI} " + "y " * 5000, (OPENAI,), ("x x x", "key=", "…[truncated")),
    ("long-secret-start", f"Bearer {GITHUB} " + "lorem ipsum " * 8000, (GITHUB,), ("Bearer ", "lorem ipsum", "…[truncated")),
]

# Provider key shapes, each inside prose.
PROVIDER_KEYS: list[tuple[str, str]] = [
    ("openai", OPENAI), ("openai-legacy", OPENAI_LEGACY), ("anthropic", ANTHROPIC), ("aws-id", AWS_ID),
    ("aws-temp-id", AWS_TEMP_ID), ("github", GITHUB), ("github-oauth", GITHUB_OAUTH), ("github-app", GITHUB_APP),
    ("github-pat", GITHUB_PAT), ("gitlab", GITLAB), ("slack-bot", SLACK_BOT), ("slack-user", SLACK_USER),
    ("slack-app", SLACK_APP), ("stripe", STRIPE), ("stripe-test", STRIPE_TEST), ("stripe-restricted", STRIPE_RESTRICTED),
    ("stripe-webhook", STRIPE_WEBHOOK), ("google", GOOGLE), ("google-oauth", GOOGLE_OAUTH),
    ("google-client-secret", GOOGLE_CLIENT_SECRET), ("huggingface", HUGGINGFACE), ("npm", NPM), ("pypi", PYPI),
    ("sendgrid", SENDGRID), ("twilio", TWILIO), ("digitalocean", DIGITALOCEAN), ("shopify", SHOPIFY),
    ("databricks", DATABRICKS), ("groq", GROQ), ("replicate", REPLICATE), ("perplexity", PERPLEXITY), ("xai", XAI),
    ("langsmith", LANGSMITH), ("vault", VAULT), ("atlassian", ATLASSIAN), ("postman", POSTMAN), ("linear", LINEAR),
    ("notion", NOTION), ("age", AGE), ("jwt", JWT),
]
PROVIDER_CASES: list[CaseRow] = [
    (f"provider:{name}", f"step 3 used {key}, then continued.", (key,), ("step 3 used ", ", then continued."))
    for name, key in PROVIDER_KEYS
] + [
    (f"provider-in-json:{name}", {"tool": "shell", "output": f'{{"k": "{key}"}}'}, (key,), ('{"k": "', "shell"))
    for name, key in PROVIDER_KEYS[::3]
]

SECRET_CASES: list[CaseRow] = KEY_CASES + STRUCTURE_CASES + TEXT_CASES + PROVIDER_CASES

# --- must come back unchanged -------------------------------------------------------------
BENIGN_CASES: list[tuple[str, Any]] = [
    ("git-sha", {"commit": SHA1, "parent": SHA1[::-1]}),
    ("uuid", {"plan_id": UUID, "request_id": UUID}),
    ("sha256-field", {"sha256": SHA256, "digest": f"sha256:{SHA256}"}),
    ("paths", {"path": "/srv/plandb/plans/plan_42.sqlite", "win": "C:\\Users\\ada\\plans\\p.sqlite"}),
    ("url-plain", "https://api.example.com:8443/v1/items?page=2&sort=asc#top"),
    ("url-user-only", "ssh://git@github.com/owner/repo.git"),
    ("email", "contact ops@example.com or mailto:ops@example.com"),
    ("prose-password", "Reset your password via the link we sent you."),
    ("prose-tokenizer", "the tokenizer splits tokens into subwords; 4000 tokens max"),
    ("prose-forgot", "Forgot password? Your API key was rotated yesterday."),
    ("prose-bearer", "Bearer tokens are described in RFC 6750; the bearer of this letter is trusted."),
    ("prose-bearer-words", "Use Bearer authentication. Bearer token-based flows are common."),
    ("prose-basic", "Basic usage: call fetch() with a timeout. Basic authentication is discouraged."),
    ("prose-auth-header", "The Authorization header is missing from the request."),
    ("prose-keyvalue", "Store key: value pairs in the cache table."),
    ("prose-credentials-file", "see credentials.json: it holds the service account"),
    ("max-tokens", {"max_tokens": 4000, "temperature": 0.2}),
    ("usage", {"usage": {"prompt_tokens": 1234, "completion_tokens": 321, "total_tokens": 1555,
                         "prompt_tokens_details": {"cached_tokens": 0}}}),
    ("token-count-keys", {"token_count": 12, "tokens_used": 99, "num_tokens": 3, "token_limit": 8192, "max_token": 64}),
    ("token-number", {"token": 4000, "access_token": 7}),
    ("tokenizer", {"tokenizer": "cl100k_base", "tokens": ["the", "cat"]}),
    ("special-tokens", {"eos_token": "</s>", "bos_token": "<s>", "pad_token": "<pad>", "eos_token_id": 2}),
    ("pagination", {"next_page_token": "CiAKGjBpNDd2Nmp2", "NextToken": "eyJv"}),
    ("key-generic", {"key": "status", "value": "done"}),
    ("primary-key", {"primary_key": "id", "foreign_keys": ["plan_id"], "sort_key": "position"}),
    ("keywords", {"keywords": ["sqlite", "planner"], "keyword": "wal"}),
    ("key-id", {"key_id": "k-2026-01", "kid": "abc", "api_key_id": "ak_01"}),
    ("signature", {"signature": "def write(self, plan_id: int) -> None", "sig": "(a, b)"}),
    ("author", {"author": "Ada Lovelace", "authors": ["a", "b"], "authored_at": "2026"}),
    ("password-policy", {"password_policy": {"min_length": 12, "require_digit": True}, "password_min_length": 8}),
    ("session", {"session": {"id": "sess_01", "started": "2026-11-22"}, "session_id": "sess_01"}),
    ("pwd-path", {"PWD": "/home/agent/work", "OLDPWD": "/home/agent"}),
    ("token-type", {"token_type": "Bearer", "expires_in": 3600, "scope": "read"}),
    ("auth-method", {"auth_method": "oauth2", "auth_type": "basic", "auth_url": "https://id.example.com/authorize"}),
    ("secret-name", {"secret_name": "db-credentials", "secretName": "tls-cert"}),
    ("key-path", {"private_key_path": "/etc/keys/id_ed25519", "password_file": "/run/secrets/db"}),
    ("flags-none", {"has_password": True, "password_required": False, "password": None, "api_key": None}),
    ("passwordless", {"passwordless": True, "first_pass": "tokenize", "bypass": "cache"}),
    ("oauth", {"OAuth": "enabled", "oauth_provider": "github"}),
    ("timestamps", ["2026-11-22T10:01:24.123456Z", "10:30:45", "2026-11-22 10:01"]),
    ("numbers", [0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, 1e300, True, False, None]),
    ("ssh-public-key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ada@host"),
    ("base64-id", {"cursor": "dGhpcyBpcyBub3QgYSBzZWNyZXQ=", "etag": '"33a64df551425fcc55e4d42a148795d9f25f89d4"'}),
    ("kebab-ids", ["task-00001", "risk-assessment-for-the-new-feature", "ask-the-user-for-more-details-1234"]),
    ("sk-learn-word", "install sk-learn-compatible-estimator-wrapper first"),
    ("code-annotations", "def login(password: str, token: Optional[str] = None) -> bool:"),
    ("code-compare", "if token == expected and password != None: return True"),
    ("html-input", '<input type="password" name="password" autocomplete="off">'),
    ("config-plain", "DEBUG=true\nPORT=8080\nMAX_TOKENS=4000\nTOKEN_LIMIT=4000\nCONTENT_TYPE=application/json"),
    ("cli-plain", "plandb --max-tokens 4000 --password-file /run/secrets/db --db-root ./data"),
    ("uid-gid", "docker run -u 1000:1000 img; git push -u origin main; python -u run.py"),
    ("docker-ports", "docker run -p 8080:80 -v /data:/data nginx:1.27"),
    ("headers-plain", {"Content-Type": "application/json", "X-Request-Id": UUID, "User-Agent": "plandb/0.1"}),
    ("empty-things", {"": "", "list": [], "dict": {}, "s": " "}),
    ("unicode", {"title": "Plan für Straße — 计划 ✓", "emoji": "🚀 done"}),
    ("markers", ["[REDACTED]", "password=[REDACTED]", "Bearer [REDACTED]", "…[truncated 5 chars]"]),
    ("math-expr", "a:b::c x := y; a => b"),
    ("log-line", "2026-11-22T10:01:24Z INFO plan_store: wrote 12 tasks to plans/plan_7.sqlite in 3.2 ms"),
    ("aws-arn", "arn:aws:iam::123456789012:role/PlannerRole"),
    ("hex-blob", "0x" + SHA256 + SHA256),
    ("long-benign", "lorem ipsum dolor sit amet " * 100),
]
