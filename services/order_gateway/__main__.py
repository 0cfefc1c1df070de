from services.order_gateway.main import main

main()
